/// Proleptic Gregorian calendar arithmetic on plain integers.
///
/// The scheduler's hot path works in "civil seconds": seconds since 1970-01-01T00:00:00 of a wall
/// clock, with no zone attached. Converting between civil seconds and (year, month, day, hour,
/// minute, second) with these functions never allocates and never consults `Calendar`, which is
/// what lets cron matching run at millions of steps per second.
enum CivilTime {
  /// Seconds in a civil day (wall clocks have no leap seconds here).
  static let secondsPerDay: Int64 = 86_400

  /// Days since 1970-01-01 for a proleptic Gregorian date (Hinnant's `days_from_civil`).
  @inline(__always)
  static func days(year: Int64, month: Int64, day: Int64) -> Int64 {
    let y = month <= 2 ? year - 1 : year
    let era = (y >= 0 ? y : y - 399) / 400
    let yoe = y - era * 400
    let mp = (month + 9) % 12
    let doy = (153 * mp + 2) / 5 + day - 1
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
    return era * 146_097 + doe - 719_468
  }

  /// The date for a count of days since 1970-01-01 (Hinnant's `civil_from_days`).
  @inline(__always)
  static func date(days: Int64) -> (year: Int64, month: Int64, day: Int64) {
    let z = days + 719_468
    let era = (z >= 0 ? z : z - 146_096) / 146_097
    let doe = z - era * 146_097
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
    let mp = (5 * doy + 2) / 153
    let day = doy - (153 * mp + 2) / 5 + 1
    let month = mp < 10 ? mp + 3 : mp - 9
    return (yoe + era * 400 + (month <= 2 ? 1 : 0), month, day)
  }

  /// Day of the week for days since 1970-01-01: 0 = Sunday … 6 = Saturday (1970-01-01 was a Thursday).
  @inline(__always)
  static func weekday(days: Int64) -> Int64 {
    let w = (days + 4) % 7
    return w < 0 ? w + 7 : w
  }

  /// Whether `year` is a Gregorian leap year.
  @inline(__always)
  static func isLeapYear(_ year: Int64) -> Bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
  }

  /// Number of days in `month` (1–12) of `year`.
  @inline(__always)
  static func daysInMonth(year: Int64, month: Int64) -> Int64 {
    switch month {
    case 2: return isLeapYear(year) ? 29 : 28
    case 4, 6, 9, 11: return 30
    default: return 31
    }
  }

  /// Floor division, for splitting negative civil seconds into days and seconds of the day.
  @inline(__always)
  static func floorDiv(_ a: Int64, _ b: Int64) -> Int64 {
    let q = a / b
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q
  }

  /// Floor modulo, always in `0..<b` for positive `b`.
  @inline(__always)
  static func floorMod(_ a: Int64, _ b: Int64) -> Int64 {
    let r = a % b
    return r < 0 ? r + b : r
  }

  /// Civil seconds since the epoch for a wall-clock date-time.
  @inline(__always)
  static func seconds(
    year: Int64, month: Int64, day: Int64, hour: Int64, minute: Int64, second: Int64
  ) -> Int64 {
    days(year: year, month: month, day: day) * secondsPerDay + hour * 3600 + minute * 60 + second
  }
}

/// A wall-clock date and time with no zone: what a person means by "8 March 2026 at 02:30".
///
/// One-shot schedules may be given this way together with an IANA zone; the zone's rules and the
/// schedule's ``DSTPolicy`` decide which instant (if any, or which two) it denotes.
public struct LocalDateTime: Sendable, Hashable, Comparable, CustomStringConvertible {
  /// Gregorian year, 1–9999.
  public var year: Int
  /// Month, 1–12.
  public var month: Int
  /// Day of the month, 1–31 (checked against the month).
  public var day: Int
  /// Hour, 0–23.
  public var hour: Int
  /// Minute, 0–59.
  public var minute: Int
  /// Second, 0–59.
  public var second: Int

  /// Creates a wall-clock date-time, checking every field (the error names the field that is wrong).
  public init(
    year: Int, month: Int, day: Int, hour: Int = 0, minute: Int = 0, second: Int = 0
  )
    throws(ScheduleValidationError)
  {
    func check(
      _ value: Int, _ name: String, _ range: ClosedRange<Int>
    )
      throws(ScheduleValidationError)
    {
      guard range.contains(value) else {
        throw ScheduleValidationError(
          field: "time",
          reason: "\(name) \(value) out of range \(range.lowerBound)-\(range.upperBound)")
      }
    }
    try check(year, "year", 1...9999)
    try check(month, "month", 1...12)
    let maxDay = Int(CivilTime.daysInMonth(year: Int64(year), month: Int64(month)))
    try check(day, "day", 1...maxDay)
    try check(hour, "hour", 0...23)
    try check(minute, "minute", 0...59)
    try check(second, "second", 0...59)
    self.year = year
    self.month = month
    self.day = day
    self.hour = hour
    self.minute = minute
    self.second = second
  }

  init(civilSeconds: Int64) {
    let days = CivilTime.floorDiv(civilSeconds, CivilTime.secondsPerDay)
    let sod = civilSeconds - days * CivilTime.secondsPerDay
    let date = CivilTime.date(days: days)
    year = Int(date.year)
    month = Int(date.month)
    day = Int(date.day)
    hour = Int(sod / 3600)
    minute = Int(sod / 60 % 60)
    second = Int(sod % 60)
  }

  /// Seconds since 1970-01-01T00:00:00 on a wall clock (no zone).
  var civilSeconds: Int64 {
    CivilTime.seconds(
      year: Int64(year), month: Int64(month), day: Int64(day),
      hour: Int64(hour), minute: Int64(minute), second: Int64(second))
  }

  /// ISO 8601 form without an offset, e.g. `2026-03-08T02:30:00`.
  public var description: String {
    RFC3339.formatLocal(civilSeconds: civilSeconds)
  }

  public static func < (lhs: LocalDateTime, rhs: LocalDateTime) -> Bool {
    lhs.civilSeconds < rhs.civilSeconds
  }
}

extension LocalDateTime: Codable {
  /// Decodes `YYYY-MM-DDTHH:MM:SS` (no offset), validating every field.
  public init(from decoder: any Decoder) throws {
    let container = try decoder.singleValueContainer()
    let text = try container.decode(String.self)
    let parsed: RFC3339.Parsed
    do {
      parsed = try RFC3339.parse(text, field: "time")
    } catch {
      throw DecodingError.dataCorruptedError(in: container, debugDescription: error.description)
    }
    guard case .local(let local) = parsed else {
      throw DecodingError.dataCorruptedError(
        in: container, debugDescription: "time: \"\(text)\" has an offset; a local time has none")
    }
    self = local
  }

  /// Encodes as `YYYY-MM-DDTHH:MM:SS`.
  public func encode(to encoder: any Encoder) throws {
    var container = encoder.singleValueContainer()
    try container.encode(description)
  }
}
