import Foundation
import Testing

@testable import HourglassCore

@Suite("ScheduleSpec JSON")
struct ScheduleSpecCodingTests {
  static func encode(_ spec: ScheduleSpec) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return String(decoding: try encoder.encode(spec), as: UTF8.self)
  }

  static func decode(_ json: String) throws -> ScheduleSpec {
    try JSONDecoder().decode(ScheduleSpec.self, from: Data(json.utf8))
  }

  static let samples: [ScheduleSpec] = {
    var full = ScheduleSpec(
      .cron("*/5 * * * *"), timeZone: "America/New_York", start: 1_767_225_600_000_000,
      end: 1_798_761_600_123_456,
      maxRuns: 10, jitter: 90_000_000, dst: DSTPolicy(gap: .skip, overlap: .both),
      misfire: try! MisfirePolicy(.runAll, limit: 7, grace: 30_000_000), overlap: .allow)
    full.maxRuns = 10
    let local = try! LocalDateTime(year: 2026, month: 3, day: 8, hour: 2, minute: 30)
    return [
      full,
      .cron("@daily"),
      .interval(every: 5_400_000_000, anchor: 1_767_225_600_000_000),
      .interval(every: 1_500_000),
      .once(at: 1_767_225_600_000_001),
      .once(at: local, timeZone: "America/New_York"),
      ScheduleSpec(.once(.instant(-1)), misfire: .skip),
    ]
  }()

  @Test(
    "encode then decode gives an equal value, and encoding again the same bytes", arguments: samples
  )
  func roundTrip(_ spec: ScheduleSpec) throws {
    let json = try Self.encode(spec)
    let back = try Self.decode(json)
    #expect(back == spec)
    #expect(try Self.encode(back) == json)
  }

  @Test("the documented shape")
  func shape() throws {
    let spec = ScheduleSpec.cron("*/5 * * * *", timeZone: "America/New_York")
    #expect(
      try Self.encode(spec) == """
        {"cron":"*/5 * * * *","dst":{"gap":"run-after","overlap":"once"},"end":null,"jitter":"0s","kind":"cron",\
        "maxRuns":null,"misfire":{"grace":"1m","limit":100,"policy":"run-once"},"overlap":"skip","start":null,\
        "timeZone":"America/New_York"}
        """)
    let interval = ScheduleSpec.interval(every: 5_400_000_000, anchor: 1_767_225_600_000_000)
    let json = try Self.encode(interval)
    #expect(json.contains(#""every":"1h30m""#))
    #expect(json.contains(#""anchor":"2026-01-01T00:00:00Z""#))
    #expect(json.contains(#""kind":"interval""#))
    guard case .local(let local) = try RFC3339.parse("2026-03-08T02:30:00") else { return }
    #expect(
      try Self.encode(.once(at: local, timeZone: "America/New_York")).contains(
        #""at":"2026-03-08T02:30:00""#))
  }

  @Test("minimal documents decode with defaults; unknown keys are ignored")
  func minimalAndForwardCompatible() throws {
    let spec = try Self.decode(
      #"{"kind":"cron","cron":"0 9 * * 1-5","futureField":{"x":[1,2]},"another":true}"#)
    #expect(spec == ScheduleSpec.cron("0 9 * * 1-5"))
    let interval = try Self.decode(#"{"kind":"interval","every":"15m"}"#)
    #expect(interval.kind == .interval(every: 900_000_000, anchor: 0))
    let once = try Self.decode(#"{"kind":"once","at":"2026-03-08T03:00:00-04:00"}"#)
    #expect(once.kind == .once(.instant(instant("2026-03-08T07:00:00Z"))))
    let policies = try Self.decode(
      #"{"kind":"cron","cron":"* * * * *","dst":{"gap":"skip"},"misfire":{"policy":"skip"},"overlap":"allow"}"#
    )
    #expect(policies.dst == DSTPolicy(gap: .skip, overlap: .once))
    #expect(policies.misfire.mode == .skip)
    #expect(policies.overlap == .allow)
  }

  /// Documents both JSON readers refuse, with a fragment of the error that names the field.
  static let refusedDocuments: [(String, String)] = [
    (#"{"kind":"weekly","cron":"* * * * *"}"#, "kind: unknown schedule kind"),
    (#"{"kind":"interval","every":"15 minutes"}"#, "every: \"15 minutes\" is not a duration"),
    (#"{"kind":"once","at":"tomorrow"}"#, "at: \"tomorrow\" is not an RFC 3339 time"),
    (
      #"{"kind":"cron","cron":"* * * * *","start":"2026-01-01T00:00:00"}"#,
      "start: \"2026-01-01T00:00:00\" has no UTC offset"
    ),
    (
      #"{"kind":"cron","cron":"* * * * *","misfire":{"policy":"run-all","limit":0}}"#,
      "misfire.limit: 0 out of range 1-1000"
    ),
    (#"{"kind":"cron"}"#, "cron"),
  ]

  @Test("bad documents are refused with the field named", arguments: refusedDocuments)
  func badDocuments(json: String, fragment: String) {
    do {
      _ = try Self.decode(json)
      Issue.record("decoded \(json)")
    } catch {
      #expect("\(error)".contains(fragment), "\(error)")
    }
  }

  @Test(
    "decoding does not cross-check: Schedule does",
    arguments: [
      (#"{"kind":"cron","cron":"0 24 * * *"}"#, "cron: hour 24 out of range 0-23"),
      (
        #"{"kind":"cron","cron":"* * * * *","timeZone":"Nowhere/Land"}"#,
        "time-zone: unknown IANA time zone \"Nowhere/Land\""
      ),
    ])
  func validateAfterDecode(json: String, message: String) throws {
    let spec = try Self.decode(json)
    #expect(throws: ScheduleValidationError.self) { try spec.validate() }
    do { try spec.validate() } catch { #expect(error.description == message) }
  }

  @Test("policies encode as documented")
  func policies() throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    let retry = try RetryPolicy(
      maxAttempts: 5, initialBackoff: 500_000, multiplier: 3, maxBackoff: 60_000_000, jitter: 0.1,
      attemptTimeout: 600_000_000)
    let json = String(decoding: try encoder.encode(retry), as: UTF8.self)
    #expect(
      json
        == #"{"attemptTimeout":"10m","initialBackoff":"500ms","jitter":0.1,"maxAttempts":5,"maxBackoff":"1m","multiplier":3}"#
    )
    #expect(try JSONDecoder().decode(RetryPolicy.self, from: Data(json.utf8)) == retry)
    #expect(
      try JSONDecoder().decode(RetryPolicy.self, from: Data("{}".utf8)) == RetryPolicy.defaults)
    #expect(String(decoding: try encoder.encode(try Priority(7)), as: UTF8.self) == "7")
    #expect(throws: (any Error).self) {
      try JSONDecoder().decode(Priority.self, from: Data("101".utf8))
    }
    #expect(String(decoding: try encoder.encode(OverlapPolicy.skip), as: UTF8.self) == #""skip""#)
  }
}

@Suite("Value coding")
struct ValueCodingTests {
  @Test("cron expressions and local times encode as strings and round-trip")
  func strings() throws {
    let cron = try CronExpression("*/5 9-17 * * MON-FRI")
    let cronJSON = try JSONEncoder().encode(cron)
    #expect(try JSONDecoder().decode(CronExpression.self, from: cronJSON) == cron)
    #expect(throws: (any Error).self) {
      try JSONDecoder().decode(CronExpression.self, from: Data(#""0 24 * * *""#.utf8))
    }
    let local = try LocalDateTime(year: 2026, month: 11, day: 1, hour: 1, minute: 30)
    let localJSON = try JSONEncoder().encode(local)
    #expect(String(decoding: localJSON, as: UTF8.self) == #""2026-11-01T01:30:00""#)
    #expect(try JSONDecoder().decode(LocalDateTime.self, from: localJSON) == local)
  }
}
