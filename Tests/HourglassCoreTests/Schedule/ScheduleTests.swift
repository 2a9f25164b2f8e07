import Foundation
import Testing

@testable import HourglassCore

@Suite("Schedule kinds, windows, limits and jitter")
struct ScheduleTests {
  // MARK: once

  @Test("once at an RFC 3339 instant fires once")
  func onceInstant() throws {
    let schedule = try Schedule(.once(at: instant("2026-03-08T07:00:00Z")))
    #expect(
      schedule.nextFireTime(after: instant("2026-03-01T00:00:00Z"))
        == instant("2026-03-08T07:00:00Z"))
    #expect(schedule.nextFireTime(after: instant("2026-03-08T07:00:00Z")) == nil)
    #expect(schedule.fireTimes(after: 0, count: 5).count == 1)
  }

  struct OnceLocalCase: Sendable, CustomTestStringConvertible {
    var local: String
    var zone: String
    var dst: DSTPolicy
    var expected: [String]
    var testDescription: String { "\(local) \(zone) \(dst.gap.rawValue)/\(dst.overlap.rawValue)" }
  }

  @Test(
    "once at a local time in a zone, with DST policies",
    arguments: [
      OnceLocalCase(
        local: "2026-07-01T09:00:00", zone: "America/New_York", dst: .defaults,
        expected: ["2026-07-01T09:00:00-04:00"]),
      OnceLocalCase(
        local: "2026-03-08T02:30:00", zone: "America/New_York", dst: .defaults,
        expected: ["2026-03-08T03:00:00-04:00"]),
      OnceLocalCase(
        local: "2026-11-01T01:30:00", zone: "America/New_York", dst: .defaults,
        expected: ["2026-11-01T01:30:00-04:00"]),
      OnceLocalCase(
        local: "2026-11-01T01:30:00", zone: "America/New_York", dst: DSTPolicy(overlap: .both),
        expected: ["2026-11-01T01:30:00-04:00", "2026-11-01T01:30:00-05:00"]),
      OnceLocalCase(
        local: "2011-12-30T12:00:00", zone: "Pacific/Apia", dst: .defaults,
        expected: ["2011-12-31T00:00:00+14:00"]),
      OnceLocalCase(
        local: "2026-10-04T02:10:00", zone: "Australia/Lord_Howe", dst: .defaults,
        expected: ["2026-10-04T02:30:00+11:00"]),
      OnceLocalCase(
        local: "2026-06-01T12:00:00", zone: "Asia/Kathmandu", dst: .defaults,
        expected: ["2026-06-01T12:00:00+05:45"]),
    ])
  func onceLocal(_ c: OnceLocalCase) throws {
    guard case .local(let local) = try RFC3339.parse(c.local) else {
      Issue.record("not a local time")
      return
    }
    var spec = ScheduleSpec.once(at: local, timeZone: c.zone)
    spec.dst = c.dst
    #expect(try fires(spec, after: "1970-01-01T00:00:00Z", count: 5) == c.expected)
  }

  @Test("once at a local time inside a gap with dst.gap skip is refused, naming the field")
  func onceGapSkip() throws {
    guard case .local(let local) = try RFC3339.parse("2026-03-08T02:30:00") else { return }
    var spec = ScheduleSpec.once(at: local, timeZone: "America/New_York")
    spec.dst.gap = .skip
    #expect(
      throws: ScheduleValidationError(
        field: "at",
        reason:
          "2026-03-08T02:30:00 does not exist in America/New_York (skipped by a DST transition) and dst.gap is skip"
      )
    ) {
      try Schedule(spec)
    }
  }

  // MARK: interval

  @Test("interval fires at anchor + k × every, strictly after the given instant")
  func interval() throws {
    let anchor = instant("2026-01-01T00:00:00Z")
    let schedule = try Schedule(.interval(every: 90 * 60_000_000, anchor: anchor))
    #expect(schedule.nextFireTime(after: anchor - 1) == anchor)
    #expect(schedule.nextFireTime(after: anchor) == anchor + 5_400_000_000)
    #expect(schedule.nextFireTime(after: anchor + 5_400_000_000 - 1) == anchor + 5_400_000_000)
    #expect(schedule.nextFireTime(after: instant("2025-01-01T00:00:00Z")) == anchor)
    let times = schedule.fireTimes(after: anchor, count: 3).map { RFC3339.formatUTC(micros: $0) }
    #expect(times == ["2026-01-01T01:30:00Z", "2026-01-01T03:00:00Z", "2026-01-01T04:30:00Z"])
  }

  @Test("interval ignores DST: 24h across spring-forward is 25:00 on the wall clock minus one")
  func intervalAcrossDST() throws {
    var spec = ScheduleSpec.interval(
      every: 86_400_000_000, anchor: instant("2026-03-07T12:00:00-05:00"))
    spec.timeZone = "America/New_York"
    let schedule = try Schedule(spec)
    let times = schedule.fireTimes(after: instant("2026-03-07T12:00:00-05:00"), count: 2).map(
      schedule.format)
    #expect(times == ["2026-03-08T13:00:00-04:00", "2026-03-09T13:00:00-04:00"])
  }

  // MARK: windows and limits

  @Test("start and end window: start inclusive, end exclusive")
  func window() throws {
    var spec = cronSpec("0 * * * *")
    spec.start = instant("2026-01-01T10:00:00Z")
    spec.end = instant("2026-01-01T13:00:00Z")
    let schedule = try Schedule(spec)
    let times = schedule.fireTimes(after: instant("2026-01-01T00:00:00Z"), count: 10).map {
      RFC3339.formatUTC(micros: $0)
    }
    #expect(times == ["2026-01-01T10:00:00Z", "2026-01-01T11:00:00Z", "2026-01-01T12:00:00Z"])
  }

  @Test("max runs counts runs started")
  func maxRuns() throws {
    var spec = cronSpec("*/5 * * * *")
    spec.maxRuns = 3
    let schedule = try Schedule(spec)
    let t0 = instant("2026-01-01T00:00:00Z")
    #expect(schedule.fireTimes(after: t0, count: 10).count == 3)
    #expect(schedule.fireTimes(after: t0, count: 10, runsSoFar: 2).count == 1)
    #expect(schedule.nextFireTime(after: t0, runsSoFar: 3) == nil)
  }

  // MARK: jitter

  @Test(
    "stable hash: pinned values (persisted schedules and jitter depend on them)",
    arguments: [
      ("", UInt64(0xc381_7c01_6ba4_ff30)),
      ("a", UInt64(0x5f29_c2aa_dd9b_8527)),
      ("task-1", UInt64(0x853b_9217_98cf_b0fa)),
      ("0192f0c4-7a1b-7c3d-8e9f-000000000000", UInt64(0xa566_c405_a237_13ba)),
    ])
  func stableHash(text: String, expected: UInt64) {
    // Reference values computed independently (FNV-1a 64 then the SplitMix64 finaliser, in Python).
    #expect(StableHash.hash(text) == expected)
    #expect(StableHash.hash(Array(text.utf8)) == expected)
  }

  @Test(
    "jitter is stable per task id, within bounds, whole seconds, and spreads tasks",
    arguments: [
      ("0 * * * *", "America/New_York"), ("*/5 * * * *", "Europe/London"),
      ("0 9 * * 1-5", "Asia/Kathmandu"),
    ])
  func jitter(cron: String, zone: String) throws {
    var spec = cronSpec(cron, zone)
    spec.jitter = 300_000_000  // 5 minutes
    let plain = try Schedule(cronSpec(cron, zone))
    let from = instant("2026-03-01T00:00:00Z")
    var offsets = Set<Int64>()
    for i in 0..<200 {
      let id = "0192f0c4-7a1b-7c3d-8e9f-\(String(format: "%012d", i))"
      let a = try Schedule(spec, taskID: id)
      let b = try Schedule(spec, taskID: id)
      #expect(a.jitterOffset == b.jitterOffset)
      #expect(a.jitterOffset >= 0 && a.jitterOffset < 300_000_000)
      #expect(a.jitterOffset % 1_000_000 == 0)
      offsets.insert(a.jitterOffset)
      // Every fire time is the un-jittered one plus the same offset.
      let jittered = a.fireTimes(after: from, count: 20)
      let nominal = plain.fireTimes(after: from - a.jitterOffset, count: 20)
      #expect(jittered == nominal.map { $0 + a.jitterOffset })
    }
    // 200 tasks over 300 possible seconds: a uniform spread gives about 146 distinct values.
    #expect(offsets.count > 120)
  }

  @Test("jitter offset for a fixed id is pinned")
  func jitterPinned() throws {
    var spec = cronSpec("0 * * * *")
    spec.jitter = 3_600_000_000
    let a = try Schedule(spec, taskID: "example-task")
    // Computed independently in Python from the documented algorithm.
    #expect(a.jitterOffset == 2373 * 1_000_000)
  }

  @Test("jitter is refused on one-shot schedules")
  func jitterOnce() {
    var spec = ScheduleSpec.once(at: 1_000_000)
    spec.jitter = 1_000_000
    #expect(throws: ScheduleValidationError.self) { try Schedule(spec) }
  }

  // MARK: validation

  @Test(
    "validation errors name the field",
    arguments: [
      (ScheduleSpec.cron("0 24 * * *"), "cron: hour 24 out of range 0-23"),
      (
        ScheduleSpec.cron("* * * * *", timeZone: "Mars/Olympus"),
        "time-zone: unknown IANA time zone \"Mars/Olympus\""
      ),
      (ScheduleSpec.cron("* * * * *", timeZone: ""), "time-zone: unknown IANA time zone \"\""),
      (ScheduleSpec.interval(every: 500_000), "every: 500ms is shorter than 1s"),
      (
        ScheduleSpec(.cron("* * * * *"), start: 2_000_000, end: 1_000_000),
        "end: 1970-01-01T00:00:01Z is not after start 1970-01-01T00:00:02Z"
      ),
      (ScheduleSpec(.cron("* * * * *"), maxRuns: 0), "max-runs: 0 must be at least 1"),
      (
        ScheduleSpec(.cron("* * * * *"), jitter: 2 * 86_400_000_000),
        "jitter: 2d out of range 0s-1d"
      ),
      (
        ScheduleSpec(.once(.instant(5_000_000)), end: 5_000_000),
        "at: 1970-01-01T00:00:05Z is not before end"
      ),
    ])
  func validation(spec: ScheduleSpec, message: String) {
    do {
      _ = try Schedule(spec)
      Issue.record("expected \(message)")
    } catch {
      #expect(error.description == message)
    }
  }

  @Test("Date convenience matches the microsecond API")
  func dates() throws {
    let schedule = try Schedule(cronSpec("0 12 * * *", "Europe/London"))
    let date = Date(timeIntervalSince1970: 1_780_000_000)
    let next = try #require(schedule.nextFireDate(after: date))
    #expect(next.unixMicros == schedule.nextFireTime(after: date.unixMicros))
  }
}

@Suite("Robustness")
struct ScheduleRobustnessTests {
  static let extremes: [Int64] = [
    .min, .min + 1, -1, 0, 1, 253_402_300_799_000_000, 253_402_300_800_000_000, .max - 1, .max,
  ]

  @Test(
    "extreme instants never crash, and answers stay strictly after the question",
    arguments: [
      cronSpec("*/5 * * * *", "America/New_York"),
      ScheduleSpec(.cron("0 0 29 2 *"), jitter: 3_600_000_000),
      ScheduleSpec(.interval(every: 1_000_000, anchor: 0), jitter: 500_000),
      .interval(every: 100 * 365 * 86_400_000_000),
      .once(at: 1_000_000),
    ])
  func extremes(spec: ScheduleSpec) throws {
    let schedule = try Schedule(spec, taskID: "robust")
    for t in Self.extremes {
      if let next = schedule.nextFireTime(after: t) { #expect(next > t) }
      _ = schedule.fireTimes(after: t, count: 3)
      // Misfire from each extreme to a few "now"s (a scan from 1970 to 9999 of a 5-minute cron
      // is capped at misfireCountLimit, which is slow in debug builds, so only once).
      for now in [Int64.min, 0, 1_800_000_000_000_000, t == .min ? Int64.max : t] {
        let d = schedule.misfire(after: t, now: now)
        #expect(d.runsToStart.allSatisfy { $0 > t && $0 <= now })
      }
    }
  }

  @Test("fuzz: random text into the time, duration and JSON decoders never crashes")
  func fuzzDecoders() {
    var rng = SeededGenerator(seed: 99)
    let alphabet = Array("0123456789-:TZz+.smhdu µ \"{}[],:kindcronatveryzoe")
    for _ in 0..<5_000 {
      let text = String(
        (0..<Int.random(in: 0...30, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! })
      _ = try? RFC3339.parse(text)
      _ = try? DurationText.parse(text)
      _ = try? JSONDecoder().decode(ScheduleSpec.self, from: Data(text.utf8))
    }
    // Valid documents with one field replaced by random junk decode or fail, never crash.
    let keys = ["at", "every", "anchor", "timeZone", "start", "end", "jitter", "maxRuns"]
    for _ in 0..<2_000 {
      let junk = String(
        (0..<Int.random(in: 0...12, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! }
      )
      .replacingOccurrences(of: "\"", with: "")
      let key = keys.randomElement(using: &rng)!
      let json = #"{"kind":"interval","every":"1m","\#(key)":"\#(junk)"}"#
      if let spec = try? JSONDecoder().decode(ScheduleSpec.self, from: Data(json.utf8)),
        let schedule = try? Schedule(spec)
      {
        _ = schedule.fireTimes(after: 0, count: 2)
      }
    }
  }
}
