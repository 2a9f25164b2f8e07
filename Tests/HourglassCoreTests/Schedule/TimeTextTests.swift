import Testing

@testable import HourglassCore

@Suite("RFC 3339 and durations")
struct TimeTextTests {
  @Test(
    "RFC 3339 instants",
    arguments: [
      ("2026-03-08T07:00:00Z", Int64(1_772_953_200_000_000)),
      ("2026-03-08T03:00:00-04:00", 1_772_953_200_000_000),
      ("2026-03-08t12:45:00+05:45", 1_772_953_200_000_000),
      ("2026-03-08 07:00:00z", 1_772_953_200_000_000),
      ("1970-01-01T00:00:00.000001Z", 1),
      ("1969-12-31T23:59:59.5Z", -500_000),
      ("2026-03-08T07:00:00.123456789Z", 0),  // refused below: finer than a microsecond
    ])
  func instants(text: String, micros: Int64) throws {
    if text.hasSuffix("789Z") {
      #expect(throws: ScheduleValidationError.self) { try RFC3339.parseInstant(text) }
      return
    }
    #expect(try RFC3339.parseInstant(text) == micros)
  }

  @Test(
    "RFC 3339 errors",
    arguments: [
      "", "2026-03-08", "2026-13-01T00:00:00Z", "2026-02-29T00:00:00Z", "2026-03-08T24:00:00Z",
      "2026-03-08T07:00:60Z",
      "2026-03-08T07:00:00+2:00", "2026-03-08T07:00:00Zjunk", "26-03-08T07:00:00Z",
      "2026-03-08T07:00:00.Z",
    ])
  func instantErrors(text: String) {
    #expect(throws: ScheduleValidationError.self) { try RFC3339.parseInstant(text, field: "from") }
    do { _ = try RFC3339.parseInstant(text, field: "from") } catch {
      #expect(error.field == "from")
    }
  }

  @Test("formatting with offsets")
  func format() {
    #expect(
      RFC3339.format(micros: 1_772_953_200_000_000, offsetSeconds: -4 * 3600)
        == "2026-03-08T03:00:00-04:00")
    #expect(
      RFC3339.format(micros: 1_772_953_200_000_000, offsetSeconds: 20_700)
        == "2026-03-08T12:45:00+05:45")
    #expect(RFC3339.formatUTC(micros: 1_772_953_200_000_250) == "2026-03-08T07:00:00.000250Z")
    #expect(RFC3339.format(micros: 0, offsetSeconds: 0) == "1970-01-01T00:00:00+00:00")
  }

  @Test(
    "durations",
    arguments: [
      ("90s", Int64(90_000_000)), ("15m", 900_000_000), ("1h30m", 5_400_000_000),
      ("250ms", 250_000), ("2d", 172_800_000_000),
      ("1h0m5s", 3_605_000_000), ("10us", 10), ("10µs", 10), ("0s", 0),
    ])
  func durations(text: String, micros: Int64) throws {
    #expect(try DurationText.parse(text) == micros)
    #expect(try DurationText.parse(DurationText.format(micros)) == micros)
  }

  @Test(
    "duration errors", arguments: ["", "15", "m", "15 m", "1.5h", "-5s", "5y", "999999999999999d"])
  func durationErrors(text: String) {
    #expect(throws: ScheduleValidationError.self) { try DurationText.parse(text, field: "every") }
  }

  @Test("canonical duration text")
  func canonical() {
    #expect(DurationText.format(5_400_000_000) == "1h30m")
    #expect(DurationText.format(90_061_001_001) == "1d1h1m1s1ms1us")
    #expect(DurationText.format(250_000) == "250ms")
  }
}

/// The byte-level formatters against the `String`-building ones they replaced, kept here as the
/// reference: the same text for every instant, offset and duration tried.
@Suite("RFC 3339 and durations written as bytes")
struct TimeTextBytesTests {
  static func referenceLocal(_ civilSeconds: Int64) -> String {
    func pad2(_ v: Int) -> String { v < 10 ? "0" + String(v) : String(v) }
    let days = CivilTime.floorDiv(civilSeconds, CivilTime.secondsPerDay)
    let sod = Int(civilSeconds - days * CivilTime.secondsPerDay)
    let date = CivilTime.date(days: days)
    let year = String(date.year)
    return String(repeating: "0", count: max(0, 4 - year.count)) + year + "-" + pad2(Int(date.month)) + "-" + pad2(Int(date.day)) + "T"
      + pad2(sod / 3600) + ":" + pad2(sod / 60 % 60) + ":" + pad2(sod % 60)
  }

  static func reference(micros: Int64, offsetSeconds: Int, useZ: Bool) -> String {
    func pad2(_ v: Int) -> String { v < 10 ? "0" + String(v) : String(v) }
    let utcSeconds = CivilTime.floorDiv(micros, 1_000_000)
    let fraction = micros - utcSeconds * 1_000_000
    var text = referenceLocal(utcSeconds + Int64(offsetSeconds))
    if fraction != 0 {
      let digits = String(fraction)
      text += "." + String(repeating: "0", count: 6 - digits.count) + digits
    }
    if offsetSeconds == 0 && useZ { return text + "Z" }
    let minutes = (abs(offsetSeconds) + 30) / 60
    return text + (offsetSeconds < 0 ? "-" : "+") + pad2(minutes / 60) + ":" + pad2(minutes % 60)
  }

  static func referenceDuration(_ micros: Int64) -> String {
    if micros == 0 { return "0s" }
    let units: [(String, Int64)] = [("d", 86_400_000_000), ("h", 3_600_000_000), ("m", 60_000_000), ("s", 1_000_000), ("ms", 1_000), ("us", 1)]
    var rest = micros < 0 ? -micros : micros
    var text = micros < 0 ? "-" : ""
    for (suffix, size) in units where rest >= size {
      text += String(rest / size) + suffix
      rest %= size
    }
    return text
  }

  @Test("instants from year 1 to 9999 and beyond, with fractions and offsets, read the same")
  func instantsMatchTheReference() {
    var random = SeededGenerator(seed: 3339)
    let fixed: [Int64] = [0, 1, -1, 999_999, 1_000_000, -62_135_596_800_000_000, 253_402_300_799_999_999, 1_795_996_800_000_000, 4_000_000_000_000_000_000]
    let offsets = [0, 3_600, -3_600, 19_800, -34_200, 50_400, -43_200, 61, -89]
    var samples = fixed
    for _ in 0..<2_000 {
      samples.append(Int64(bitPattern: random.next()) % 300_000_000_000_000_000)
      samples.append(Int64(random.next() % 4_000_000_000_000_000) / 1_000_000 * 1_000_000)
    }
    for micros in samples {
      for offset in offsets {
        for useZ in [true, false] {
          #expect(RFC3339.format(micros: micros, offsetSeconds: offset, useZ: useZ) == Self.reference(micros: micros, offsetSeconds: offset, useZ: useZ))
        }
      }
    }
  }

  @Test("durations, negative ones and zero included, read the same")
  func durationsMatchTheReference() {
    var random = SeededGenerator(seed: 90)
    var samples: [Int64] = [0, 1, -1, 1_000, 60_000_000, 5_400_000_000, 86_400_000_000, Int64.max, -Int64.max]
    for _ in 0..<2_000 {
      samples.append(Int64(bitPattern: random.next()) % 10_000_000_000_000)
      samples.append(Int64(random.next() % 100_000) * 1_000_000)
    }
    for micros in samples { #expect(DurationText.format(micros) == Self.referenceDuration(micros)) }
  }

  @Test("integers in the JSON writer, from Int.min to Int.max")
  func integers() {
    for value in [0, 7, -7, 10, 1_000_000, Int.max, Int.min, -1] {
      var writer = JSONBytesWriter()
      writer.integer(value)
      #expect(String(decoding: writer.bytes, as: UTF8.self) == String(value))
    }
  }
}
