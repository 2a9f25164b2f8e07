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
