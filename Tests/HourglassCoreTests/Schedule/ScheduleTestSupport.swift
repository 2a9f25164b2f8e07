import Foundation
import Testing

@testable import HourglassCore

/// Parses an RFC 3339 instant in a test, failing the test (not crashing) when it is malformed.
func instant(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) -> Int64 {
  do {
    return try RFC3339.parseInstant(text)
  } catch {
    Issue.record("bad test instant \(text): \(error)", sourceLocation: sourceLocation)
    return 0
  }
}

/// The next `count` fire times of `spec` after `from`, formatted in the schedule's zone.
func fires(_ spec: ScheduleSpec, after from: String, count: Int) throws -> [String] {
  let schedule = try Schedule(spec)
  return schedule.fireTimes(after: instant(from), count: count).map { schedule.format($0) }
}

/// A cron spec in a zone with a DST policy.
func cronSpec(
  _ expression: String, _ zone: String = "UTC", gap: DSTPolicy.Gap = .runAfter,
  overlap: DSTPolicy.Overlap = .once
) -> ScheduleSpec {
  ScheduleSpec(.cron(expression), timeZone: zone, dst: DSTPolicy(gap: gap, overlap: overlap))
}

/// Brute-force reference for cron fire times: walks UTC time step by step (60 s for 5-field
/// expressions, 1 s for 6-field ones), asks Foundation's `TimeZone` for the offset at each step,
/// and applies the documented DST rules literally. Deliberately slow and simple; shares only
/// `CronExpression.matches` with the code under test (which is itself tested against tables).
///
/// Assumes offset changes happen on step boundaries (true for every zone after 1970).
func referenceFireTimes(
  cron: CronExpression, zone: TimeZone, policy: DSTPolicy, from: Int64, to: Int64, step: Int64
) -> [Int64] {
  func off(_ t: Int64) -> Int64 {
    Int64(zone.secondsFromGMT(for: Date(timeIntervalSince1970: Double(t))))
  }
  func isRepeated(_ u: Int64, wall: Int64, offset: Int64) -> Bool {
    let lookBacks: [Int64] = [3600, 3 * 3600, 86_400, 2 * 86_400]
    for back in lookBacks {
      let o2 = off(u - back)
      if o2 > offset {
        let u2 = wall - o2
        if u2 < u && off(u2) == o2 { return true }
      }
    }
    return false
  }
  var result: [Int64] = []
  var previous = off(from - step)
  var u = from
  while u < to {
    let o = off(u)
    var fire = false
    if o > previous && policy.gap == .runAfter {
      // Forward transition at u: the wall times [u + previous, u + o) never happened.
      var w = u + previous
      while w < u + o {
        if cron.matches(civilSeconds: w) {
          fire = true
          break
        }
        w += step
      }
    }
    let wall = u + o
    if cron.matches(civilSeconds: wall) {
      if policy.overlap == .both || !isRepeated(u, wall: wall, offset: o) { fire = true }
    }
    if fire { result.append(u) }
    previous = o
    u += step
  }
  return result
}
