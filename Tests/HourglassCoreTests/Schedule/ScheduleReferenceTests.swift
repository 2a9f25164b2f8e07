import Foundation
import Testing

@testable import HourglassCore

/// Property tests: the fast next-fire computation against a brute-force walk through time.
///
/// Random cron expressions (seeded, so failures reproduce) are evaluated in zones with unusual
/// rules, over windows placed around real offset transitions and at random, with every DST policy.
/// The reference (`referenceFireTimes`) steps through UTC minute by minute (second by second for
/// 6-field expressions), asks Foundation for the offset at each step and applies the documented
/// rules literally.
@Suite("Next fire time against a brute-force reference")
struct ScheduleReferenceTests {
  static let zones = [
    "America/New_York", "Europe/London", "Australia/Lord_Howe", "Asia/Kathmandu", "Pacific/Apia",
    "America/Sao_Paulo", "Pacific/Chatham", "Asia/Tehran", "UTC",
  ]

  static let policies: [DSTPolicy] = [
    DSTPolicy(gap: .runAfter, overlap: .once), DSTPolicy(gap: .skip, overlap: .once),
    DSTPolicy(gap: .runAfter, overlap: .both), DSTPolicy(gap: .skip, overlap: .both),
  ]

  /// Offset transitions of `zone` between 1971 and 2060, from Foundation.
  static func transitions(_ zone: TimeZone) -> [Int64] {
    var result: [Int64] = []
    var cursor = Date(timeIntervalSince1970: 31_536_000)
    while let next = zone.nextDaylightSavingTimeTransition(after: cursor),
      next.timeIntervalSince1970 < 2_840_140_800
    {
      result.append(Int64(next.timeIntervalSince1970))
      cursor = next
    }
    return result
  }

  /// The implementation's fire times in `[from, to)` (UTC seconds).
  static func implementationFireTimes(_ schedule: Schedule, from: Int64, to: Int64) -> [Int64] {
    var result: [Int64] = []
    var cursor = from * 1_000_000 - 1
    while let t = schedule.nextFireTime(after: cursor), t < to * 1_000_000 {
      result.append(t / 1_000_000)
      cursor = t
    }
    return result
  }

  @Test("5-field expressions, minute walk, around transitions and at random", arguments: zones)
  func minuteWalk(zoneName: String) throws {
    let zone = try #require(TimeZone(identifier: zoneName))
    var rng = SeededGenerator(seed: StableHash.hash(zoneName))
    let transitions = Self.transitions(zone)
    var compared = 0
    for round in 0..<24 {
      let text = RandomCron.expression(using: &rng, seconds: false)
      guard let cron = try? CronExpression(text) else { continue }
      let policy = Self.policies[round % Self.policies.count]
      let center: Int64
      if !transitions.isEmpty && round % 4 != 3 {
        center = transitions.randomElement(using: &rng)!
      } else {
        center = Int64.random(in: 31_536_000...2_840_140_800, using: &rng)
      }
      // Three days either side, aligned to the minute.
      let from = (center - 3 * 86_400) / 60 * 60
      let to = from + 6 * 86_400
      let schedule = try Schedule(ScheduleSpec(.cron(text), timeZone: zoneName, dst: policy))
      let expected = referenceFireTimes(
        cron: cron, zone: zone, policy: policy, from: from, to: to, step: 60)
      let actual = Self.implementationFireTimes(schedule, from: from, to: to)
      compared += expected.count
      #expect(
        actual == expected,
        "\(zoneName) '\(text)' gap=\(policy.gap.rawValue) overlap=\(policy.overlap.rawValue) from \(RFC3339.formatUTC(micros: from * 1_000_000))"
      )
    }
    #expect(compared > 1_000, "the random expressions should fire often enough to test something")
  }

  @Test(
    "6-field expressions, second walk around transitions",
    arguments: ["America/New_York", "Australia/Lord_Howe", "Pacific/Apia", "Asia/Kathmandu"])
  func secondWalk(zoneName: String) throws {
    let zone = try #require(TimeZone(identifier: zoneName))
    var rng = SeededGenerator(seed: StableHash.hash("seconds " + zoneName))
    let transitions = Self.transitions(zone)
    for round in 0..<8 {
      // Hours near the transitions so the windows contain matches.
      let text =
        "\(RandomCron.field(min: 0, max: 59, using: &rng)) \(RandomCron.field(min: 0, max: 59, using: &rng, starWeight: 1)) * * * *"
      guard let cron = try? CronExpression(text) else { continue }
      let policy = Self.policies[round % Self.policies.count]
      let center = transitions.randomElement(using: &rng)!
      let from = center - 2 * 3600
      let to = center + 2 * 3600
      let schedule = try Schedule(ScheduleSpec(.cron(text), timeZone: zoneName, dst: policy))
      let expected = referenceFireTimes(
        cron: cron, zone: zone, policy: policy, from: from, to: to, step: 1)
      let actual = Self.implementationFireTimes(schedule, from: from, to: to)
      #expect(
        actual == expected,
        "\(zoneName) '\(text)' gap=\(policy.gap.rawValue) overlap=\(policy.overlap.rawValue)")
    }
  }

  @Test("offset lookups agree with Foundation at random instants", arguments: zones)
  func offsets(zoneName: String) throws {
    let zone = try #require(TimeZone(identifier: zoneName))
    let rules = try ZoneRules.named(zoneName)
    var rng = SeededGenerator(seed: 7)
    var mismatches: [Int64] = []
    for _ in 0..<20_000 {
      let t = Int64.random(in: -2_000_000_000...8_000_000_000, using: &rng)
      if rules.offset(atUTC: t)
        != Int64(zone.secondsFromGMT(for: Date(timeIntervalSince1970: Double(t))))
      {
        mismatches.append(t)
      }
    }
    #expect(mismatches.isEmpty)
  }

  @Test("fire times beyond the tabulated years (after 2400) still follow the zone's rules")
  func farFuture() throws {
    let schedule = try Schedule(cronSpec("30 2 * * *", "America/New_York"))
    let zone = try #require(TimeZone(identifier: "America/New_York"))
    let from = instant("2401-01-01T00:00:00Z")
    let times = schedule.fireTimes(after: from, count: 400)
    #expect(times.count == 400)
    var gapRuns = 0
    for t in times {
      let offset = zone.secondsFromGMT(for: Date(unixMicros: t))
      let local = LocalDateTime(civilSeconds: t / 1_000_000 + Int64(offset))
      if local.hour == 3 && local.minute == 0 {
        gapRuns += 1
      } else {
        #expect(local.hour == 2 && local.minute == 30)
      }
    }
    #expect(gapRuns == 1)  // the spring-forward day of 2401
  }
}
