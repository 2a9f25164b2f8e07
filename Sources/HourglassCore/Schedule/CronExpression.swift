/// A parsed cron expression: which wall-clock seconds it matches.
///
/// Each field is a bit set, so matching a wall time and finding the next matching one are a few
/// bit operations per field. The expression knows nothing about zones or DST: ``Schedule`` maps
/// the wall times it yields onto instants with the zone's rules and the schedule's ``DSTPolicy``.
///
/// Create one with ``init(_:)`` (which validates) — see ``CronParser`` for the grammar.
public struct CronExpression: Sendable, Hashable, CustomStringConvertible {
  /// Seconds 0–59 (bit n = second n). Just bit 0 for a 5-field expression.
  public let seconds: UInt64
  /// Minutes 0–59.
  public let minutes: UInt64
  /// Hours 0–23.
  public let hours: UInt32
  /// Days of the month 1–31 (bit n = day n).
  public let daysOfMonth: UInt32
  /// Months 1–12 (bit n = month n).
  public let months: UInt16
  /// Days of the week 0–6, Sunday = 0.
  public let daysOfWeek: UInt8
  /// Whether the day-of-month field was written starting with `*` (or `?`): unrestricted.
  public let dayOfMonthIsStar: Bool
  /// Whether the day-of-week field was written starting with `*` (or `?`): unrestricted.
  public let dayOfWeekIsStar: Bool
  /// The text this expression was parsed from, trimmed.
  public let source: String

  /// Parses and validates a cron expression (5 fields, 6 with leading seconds, or a macro).
  ///
  /// Throws a ``ScheduleValidationError`` whose field is `cron` and whose reason names the part
  /// of the expression that is wrong, e.g. `cron: hour 24 out of range 0-23`.
  public init(_ text: String) throws(ScheduleValidationError) {
    self = try CronParser.parse(text)
  }

  init(
    seconds: UInt64, minutes: UInt64, hours: UInt32, daysOfMonth: UInt32, months: UInt16,
    daysOfWeek: UInt8, dayOfMonthIsStar: Bool, dayOfWeekIsStar: Bool, source: String
  ) {
    self.seconds = seconds
    self.minutes = minutes
    self.hours = hours
    self.daysOfMonth = daysOfMonth
    self.months = months
    self.daysOfWeek = daysOfWeek
    self.dayOfMonthIsStar = dayOfMonthIsStar
    self.dayOfWeekIsStar = dayOfWeekIsStar
    self.source = source
  }

  /// The expression as written.
  public var description: String { source }

  /// Whether a calendar day matches the day-of-month and day-of-week fields.
  ///
  /// Classic (Vixie) cron rule: if either field is unrestricted (written with a leading `*`), a
  /// day must match both; if both are restricted, a day matches if either does.
  @inline(__always)
  func dayMatches(day: Int64, weekday: Int64) -> Bool {
    let domHit = daysOfMonth & (1 << UInt32(day)) != 0
    let dowHit = daysOfWeek & (1 << UInt8(weekday)) != 0
    if dayOfMonthIsStar || dayOfWeekIsStar { return domHit && dowHit }
    return domHit || dowHit
  }

  /// Whether the wall time given in civil seconds matches every field.
  public func matches(civilSeconds: Int64) -> Bool {
    let days = CivilTime.floorDiv(civilSeconds, CivilTime.secondsPerDay)
    let sod = civilSeconds - days * CivilTime.secondsPerDay
    let date = CivilTime.date(days: days)
    return months & (1 << UInt16(date.month)) != 0
      && dayMatches(day: date.day, weekday: CivilTime.weekday(days: days))
      && hours & (1 << UInt32(sod / 3600)) != 0
      && minutes & (1 << UInt64(sod / 60 % 60)) != 0
      && seconds & (1 << UInt64(sod % 60)) != 0
  }

  /// Whether the wall time matches every field.
  public func matches(_ time: LocalDateTime) -> Bool {
    matches(civilSeconds: time.civilSeconds)
  }

  /// The lowest set bit at or above `from`, or -1.
  @inline(__always)
  static func nextBit(_ mask: UInt64, from: Int64) -> Int64 {
    if from >= 64 { return -1 }
    let rest = mask >> UInt64(from)
    if rest == 0 { return -1 }
    return from + Int64(rest.trailingZeroBitCount)
  }

  /// The first wall time (civil seconds) at or after `start` that matches, looking no further
  /// than the end of year `lastYear`; `nil` if there is none by then.
  ///
  /// Works field by field from the month down, so it jumps over non-matching months, days and
  /// hours at once instead of walking minute by minute.
  @inline(__always)
  func nextMatch(atOrAfter start: Int64, lastYear: Int64) -> Int64? {
    var days = CivilTime.floorDiv(start, CivilTime.secondsPerDay)
    let sod = start - days * CivilTime.secondsPerDay
    let ymd = CivilTime.date(days: days)
    var year = ymd.year
    var month = ymd.month
    var day = ymd.day
    var hour = sod / 3600
    var minute = sod / 60 % 60
    var second = sod % 60
    let monthMask = UInt64(months)
    let hourMask = UInt64(hours)
    while true {
      // Month.
      if month > 12 || monthMask & (1 << UInt64(month)) == 0 {
        let m = CronExpression.nextBit(monthMask, from: month)
        if m < 0 || m > 12 {
          year += 1
          month = CronExpression.nextBit(monthMask, from: 1)
        } else {
          month = m
        }
        if year > lastYear { return nil }
        day = 1
        hour = 0
        minute = 0
        second = 0
        days = CivilTime.days(year: year, month: month, day: 1)
      }
      // Day.
      let monthLength = CivilTime.daysInMonth(year: year, month: month)
      if day > monthLength {
        month += 1
        day = 1
        hour = 0
        minute = 0
        second = 0
        if month > 12 {
          month = 1
          year += 1
          if year > lastYear { return nil }
        }
        days = CivilTime.days(year: year, month: month, day: 1)
        continue
      }
      var weekday = CivilTime.weekday(days: days)
      if !dayMatches(day: day, weekday: weekday) {
        var found = false
        while day < monthLength {
          day += 1
          days += 1
          weekday = weekday == 6 ? 0 : weekday + 1
          if dayMatches(day: day, weekday: weekday) {
            found = true
            break
          }
        }
        hour = 0
        minute = 0
        second = 0
        if !found {
          day = monthLength + 1
          continue
        }
      }
      // Hour.
      let h = CronExpression.nextBit(hourMask, from: hour)
      if h < 0 || h > 23 {
        day += 1
        days += 1
        hour = 0
        minute = 0
        second = 0
        continue
      }
      if h != hour {
        hour = h
        minute = 0
        second = 0
      }
      // Minute.
      let m = CronExpression.nextBit(minutes, from: minute)
      if m < 0 || m > 59 {
        hour += 1
        minute = 0
        second = 0
        continue
      }
      if m != minute {
        minute = m
        second = 0
      }
      // Second.
      let s = CronExpression.nextBit(seconds, from: second)
      if s < 0 || s > 59 {
        minute += 1
        second = 0
        continue
      }
      return days * CivilTime.secondsPerDay + hour * 3600 + minute * 60 + s
    }
  }
}

extension CronExpression: Codable {
  /// Decodes the expression from its text (a JSON string), validating it.
  public init(from decoder: any Decoder) throws {
    let container = try decoder.singleValueContainer()
    let text = try container.decode(String.self)
    do {
      self = try CronParser.parse(text)
    } catch {
      throw DecodingError.dataCorruptedError(in: container, debugDescription: error.description)
    }
  }

  /// Encodes the expression as the text it was parsed from.
  public func encode(to encoder: any Encoder) throws {
    var container = encoder.singleValueContainer()
    try container.encode(source)
  }
}
