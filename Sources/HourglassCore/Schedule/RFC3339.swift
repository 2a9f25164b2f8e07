/// Parsing and formatting of RFC 3339 timestamps, and of local date-times without an offset.
///
/// Hand-written (no `DateFormatter`, no `Calendar`) so that it is exact, fast and the same on every
/// platform. Instants are UTC microseconds since the Unix epoch.
public enum RFC3339 {
  /// A parsed timestamp: an instant when it carried `Z` or an offset, otherwise a wall time.
  public enum Parsed: Sendable, Hashable {
    /// An instant, UTC microseconds since 1970-01-01T00:00:00Z.
    case instant(Int64)
    /// A wall-clock date-time with no offset; a zone is needed to make it an instant.
    case local(LocalDateTime)
  }

  /// Parses an RFC 3339 instant such as `2026-03-08T07:00:00Z` or `2026-03-08T03:00:00.25-04:00`.
  ///
  /// `field` names the schedule field in the error. Fractions finer than a microsecond are refused
  /// rather than rounded; leap seconds (`:60`) are refused.
  public static func parseInstant(
    _ text: String, field: String = "time"
  )
    throws(ScheduleValidationError) -> Int64
  {
    switch try parse(text, field: field) {
    case .instant(let micros): return micros
    case .local:
      throw ScheduleValidationError(
        field: field, reason: "\"\(text)\" has no UTC offset (add Z or ±hh:mm)")
    }
  }

  /// Parses either an RFC 3339 instant or a local date-time `YYYY-MM-DDTHH:MM[:SS[.frac]]`.
  public static func parse(
    _ text: String, field: String = "time"
  ) throws(ScheduleValidationError)
    -> Parsed
  {
    let bytes = Array(text.utf8)
    func fail(_ why: String) -> ScheduleValidationError {
      ScheduleValidationError(field: field, reason: "\"\(text)\" is not an RFC 3339 time: \(why)")
    }
    guard bytes.count <= 64 else { throw fail("too long") }
    var i = 0
    func digits(_ n: Int, _ what: String) throws(ScheduleValidationError) -> Int {
      guard i + n <= bytes.count else { throw fail("expected \(what)") }
      var v = 0
      for k in 0..<n {
        let b = bytes[i + k]
        guard b >= 48 && b <= 57 else { throw fail("expected \(what)") }
        v = v * 10 + Int(b - 48)
      }
      i += n
      return v
    }
    func expect(_ c: UInt8, _ what: String) throws(ScheduleValidationError) {
      guard i < bytes.count, bytes[i] == c else { throw fail("expected \(what)") }
      i += 1
    }
    let year = try digits(4, "a 4-digit year")
    try expect(UInt8(ascii: "-"), "\"-\" after the year")
    let month = try digits(2, "a 2-digit month")
    try expect(UInt8(ascii: "-"), "\"-\" after the month")
    let day = try digits(2, "a 2-digit day")
    guard i < bytes.count,
      bytes[i] == UInt8(ascii: "T") || bytes[i] == UInt8(ascii: "t")
        || bytes[i] == UInt8(ascii: " ")
    else {
      throw fail("expected \"T\" between date and time")
    }
    i += 1
    let hour = try digits(2, "a 2-digit hour")
    try expect(UInt8(ascii: ":"), "\":\" after the hour")
    let minute = try digits(2, "a 2-digit minute")
    var second = 0
    var micros = 0
    if i < bytes.count, bytes[i] == UInt8(ascii: ":") {
      i += 1
      second = try digits(2, "a 2-digit second")
      if i < bytes.count, bytes[i] == UInt8(ascii: ".") {
        i += 1
        var count = 0
        var value = 0
        while i < bytes.count, bytes[i] >= 48, bytes[i] <= 57 {
          count += 1
          guard count <= 9 else { throw fail("fraction longer than 9 digits") }
          let d = Int(bytes[i] - 48)
          if count <= 6 {
            value = value * 10 + d
          } else if d != 0 {
            throw fail("precision finer than a microsecond")
          }
          i += 1
        }
        guard count > 0 else { throw fail("expected digits after \".\"") }
        for _ in 0..<max(0, 6 - count) { value *= 10 }
        micros = value
      }
    }
    if second == 60 { throw fail("leap seconds are not supported") }
    let local: LocalDateTime
    do {
      local = try LocalDateTime(
        year: year, month: month, day: day, hour: hour, minute: minute, second: second)
    } catch {
      throw fail(error.reason)
    }
    if i == bytes.count {
      guard micros == 0 else { throw fail("a local time may not have a fraction of a second") }
      return .local(local)
    }
    var offset = 0
    if bytes[i] == UInt8(ascii: "Z") || bytes[i] == UInt8(ascii: "z") {
      i += 1
    } else if bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-") {
      let sign = bytes[i] == UInt8(ascii: "-") ? -1 : 1
      i += 1
      let oh = try digits(2, "a 2-digit offset hour")
      try expect(UInt8(ascii: ":"), "\":\" in the offset")
      let om = try digits(2, "a 2-digit offset minute")
      guard oh <= 23, om <= 59 else { throw fail("offset out of range") }
      offset = sign * (oh * 3600 + om * 60)
    } else {
      throw fail("expected Z or an offset like +02:00")
    }
    guard i == bytes.count else { throw fail("unexpected text after the offset") }
    let utcSeconds = local.civilSeconds - Int64(offset)
    return .instant(utcSeconds * 1_000_000 + Int64(micros))
  }

  /// Formats an instant as RFC 3339 with the given offset (seconds east of UTC), e.g.
  /// `2026-03-08T03:00:00-04:00`; `Z` when the offset is zero and `useZ` is true. Fractions of a
  /// second are printed only when non-zero, with 6 digits. Offsets that are not whole minutes
  /// (local mean time before 1900) are rounded to the minute for display only.
  public static func format(micros: Int64, offsetSeconds: Int, useZ: Bool = false) -> String {
    var bytes: [UInt8] = []
    bytes.reserveCapacity(32)
    append(micros: micros, offsetSeconds: offsetSeconds, useZ: useZ, to: &bytes)
    return String(decoding: bytes, as: UTF8.self)
  }

  /// Appends ``format(micros:offsetSeconds:useZ:)``'s text as UTF-8 (ASCII) to `bytes`, without
  /// making a `String` (the stored schedule's JSON writes instants for every scheduled task).
  public static func append(micros: Int64, offsetSeconds: Int, useZ: Bool = false, to bytes: inout [UInt8]) {
    let utcSeconds = CivilTime.floorDiv(micros, 1_000_000)
    let fraction = micros - utcSeconds * 1_000_000
    appendLocal(civilSeconds: utcSeconds + Int64(offsetSeconds), to: &bytes)
    if fraction != 0 {
      bytes.append(UInt8(ascii: "."))
      DecimalDigits.append(UInt64(fraction), width: 6, to: &bytes)
    }
    if offsetSeconds == 0 && useZ {
      bytes.append(UInt8(ascii: "Z"))
    } else {
      bytes.append(offsetSeconds < 0 ? UInt8(ascii: "-") : UInt8(ascii: "+"))
      let minutes = (abs(offsetSeconds) + 30) / 60
      DecimalDigits.append(UInt64(minutes / 60), width: 2, to: &bytes)
      bytes.append(UInt8(ascii: ":"))
      DecimalDigits.append(UInt64(minutes % 60), width: 2, to: &bytes)
    }
  }

  /// Formats an instant in UTC, e.g. `2026-03-08T07:00:00Z`.
  public static func formatUTC(micros: Int64) -> String {
    format(micros: micros, offsetSeconds: 0, useZ: true)
  }

  /// Formats civil seconds as `YYYY-MM-DDTHH:MM:SS`.
  static func formatLocal(civilSeconds: Int64) -> String {
    var bytes: [UInt8] = []
    bytes.reserveCapacity(20)
    appendLocal(civilSeconds: civilSeconds, to: &bytes)
    return String(decoding: bytes, as: UTF8.self)
  }

  /// Appends ``formatLocal(civilSeconds:)``'s text to `bytes`.
  static func appendLocal(civilSeconds: Int64, to bytes: inout [UInt8]) {
    let days = CivilTime.floorDiv(civilSeconds, CivilTime.secondsPerDay)
    let sod = Int(civilSeconds - days * CivilTime.secondsPerDay)
    let date = CivilTime.date(days: days)
    if date.year < 0 {
      // Beyond what anyone schedules: the old text, a sign after the padding zeros.
      let year = String(date.year)
      bytes.append(contentsOf: String(repeating: "0", count: max(0, 4 - year.count)).utf8)
      bytes.append(contentsOf: year.utf8)
    } else {
      DecimalDigits.append(UInt64(date.year), width: 4, to: &bytes)
    }
    bytes.append(UInt8(ascii: "-"))
    DecimalDigits.append(UInt64(date.month), width: 2, to: &bytes)
    bytes.append(UInt8(ascii: "-"))
    DecimalDigits.append(UInt64(date.day), width: 2, to: &bytes)
    bytes.append(UInt8(ascii: "T"))
    DecimalDigits.append(UInt64(sod / 3600), width: 2, to: &bytes)
    bytes.append(UInt8(ascii: ":"))
    DecimalDigits.append(UInt64(sod / 60 % 60), width: 2, to: &bytes)
    bytes.append(UInt8(ascii: ":"))
    DecimalDigits.append(UInt64(sod % 60), width: 2, to: &bytes)
  }
}
