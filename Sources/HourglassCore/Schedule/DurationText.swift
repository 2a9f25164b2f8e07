/// Durations written for people, such as `90s`, `15m`, `1h30m`, `250ms` or `2d`.
///
/// A duration is a sequence of `number unit` pairs, each number a non-negative integer, with units
/// `us` (or `µs`), `ms`, `s`, `m`, `h` and `d`. A day is exactly 24 hours: durations measure
/// elapsed time, not wall-clock days (use a cron schedule for "every day at 09:00"). Values are
/// microseconds in an `Int64`; ``format(_:)`` prints the canonical form, which ``parse(_:field:)``
/// reads back to the same value.
public enum DurationText {
  private static let units: [(suffix: String, micros: Int64)] = [
    ("d", 86_400_000_000), ("h", 3_600_000_000), ("m", 60_000_000), ("s", 1_000_000), ("ms", 1_000),
    ("us", 1),
  ]

  /// Parses a duration into microseconds. `field` names the schedule field in errors.
  public static func parse(
    _ text: String, field: String = "duration"
  )
    throws(ScheduleValidationError) -> Int64
  {
    func fail(_ why: String) -> ScheduleValidationError {
      ScheduleValidationError(
        field: field,
        reason: "\"\(text)\" is not a duration: \(why) (write e.g. 90s, 15m, 1h30m, 250ms)")
    }
    let scalars = Array(text.unicodeScalars)
    guard !scalars.isEmpty else { throw fail("empty") }
    guard scalars.count <= 64 else { throw fail("too long") }
    var i = 0
    var total: Int64 = 0
    while i < scalars.count {
      var number: Int64 = 0
      var digits = 0
      while i < scalars.count, scalars[i].value >= 48, scalars[i].value <= 57 {
        let d = Int64(scalars[i].value - 48)
        digits += 1
        guard digits <= 15 else { throw fail("number too large") }
        number = number * 10 + d
        i += 1
      }
      guard digits > 0 else { throw fail("expected a number") }
      var unit = ""
      while i < scalars.count, scalars[i].properties.isAlphabetic || scalars[i] == "µ" {
        unit.unicodeScalars.append(scalars[i])
        i += 1
      }
      if unit == "µs" { unit = "us" }
      guard !unit.isEmpty else { throw fail("number \(number) has no unit") }
      guard let scale = units.first(where: { $0.suffix == unit })?.micros else {
        throw fail("unknown unit \"\(unit)\"")
      }
      let (product, overflow1) = number.multipliedReportingOverflow(by: scale)
      let (sum, overflow2) = total.addingReportingOverflow(product)
      guard !overflow1, !overflow2, sum <= 100 * 365 * 86_400_000_000 else {
        throw fail("longer than 100 years")
      }
      total = sum
    }
    return total
  }

  /// The canonical text for a duration in microseconds, e.g. `1h30m`, `250ms`, `0s`.
  public static func format(_ micros: Int64) -> String {
    var bytes: [UInt8] = []
    bytes.reserveCapacity(16)
    append(micros, to: &bytes)
    return String(decoding: bytes, as: UTF8.self)
  }

  /// Appends ``format(_:)``'s text as UTF-8 (ASCII) to `bytes`, without making a `String`: the
  /// stored schedule's JSON writes several durations for every scheduled task.
  public static func append(_ micros: Int64, to bytes: inout [UInt8]) {
    if micros == 0 {
      bytes.append(contentsOf: [UInt8(ascii: "0"), UInt8(ascii: "s")])
      return
    }
    if micros < 0 { bytes.append(UInt8(ascii: "-")) }
    var rest = micros.magnitude
    for unit in units where rest >= UInt64(unit.micros) {
      DecimalDigits.append(rest / UInt64(unit.micros), to: &bytes)
      bytes.append(contentsOf: unit.suffix.utf8)
      rest %= UInt64(unit.micros)
    }
  }
}
