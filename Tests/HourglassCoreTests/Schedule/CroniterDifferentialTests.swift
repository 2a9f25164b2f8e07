import Foundation
import HourglassTestSupport
import Testing

@testable import HourglassCore

/// Differential test against Python's `croniter`, a widely used cron implementation.
///
/// Runs only where `python3` can import `croniter` (CI installs it: `pip install croniter`);
/// elsewhere the test is reported as skipped. Compared in zones without DST around the chosen
/// dates (croniter's DST handling follows different rules, which `docs/schedules.md` explains).
/// croniter writes seconds as the *last* of six fields; the expressions are rewritten for it.
@Suite("Differential: croniter")
struct CroniterDifferentialTests {
  static let python = "/usr/bin/env"

  /// Runs `script` with `python3`, feeding `input` on stdin; nil if python3 is missing or fails.
  static func runPython(_ script: String, input: Data = Data()) async -> Data? {
    guard
      let (exit, output, _) = try? await TestProcess.run(python, arguments: ["python3", "-c", script], input: .bytes(Array(input))),
      exit == .exited(0)
    else { return nil }
    return Data(output.utf8)
  }

  static func croniterAvailable() async -> Bool { await runPython("import croniter") != nil }

  static let script = """
    import json, sys
    from datetime import datetime
    from zoneinfo import ZoneInfo
    from croniter import croniter
    out = []
    for case in json.load(sys.stdin):
        zone = ZoneInfo(case["zone"])
        it = croniter(case["expr"], datetime.fromtimestamp(case["start"], tz=zone))
        out.append([int(it.get_next(float)) for _ in range(case["count"])])
    json.dump(out, sys.stdout)
    """

  /// croniter 7 reads a one-value range such as `5-5` as `*` (a croniter bug); Vixie cron and
  /// Hourglass read it as `5`. Rewrite such ranges to the plain value before asking croniter.
  static func collapseSingleValueRanges(_ field: String) -> String {
    field.split(separator: ",").map { element -> String in
      let parts = element.split(separator: "/", maxSplits: 1)
      let bounds = parts[0].split(separator: "-")
      if bounds.count == 2 && bounds[0] == bounds[1] { return String(bounds[0]) }
      return String(element)
    }.joined(separator: ",")
  }

  struct Case: Codable {
    var expr: String
    var start: Int64
    var count: Int
    var zone: String
  }

  @Test(
    "random expressions agree with croniter",
    .enabled("python3 with croniter not available") { await croniterAvailable() })
  func agreesWithCroniter() async throws {
    var rng = SeededGenerator(seed: 2026)
    var cases: [Case] = []
    var ours: [[Int64]] = []
    let zones = ["UTC", "Asia/Kathmandu", "Asia/Tokyo"]
    while cases.count < 400 {
      let seconds = Int.random(in: 0..<4, using: &rng) == 0
      let text = RandomCron.expression(using: &rng, seconds: seconds)
      // croniter reads a leading-* day field differently from Vixie cron when the other day
      // field is restricted; those are covered by the table tests instead.
      let fields = text.split(separator: " ").map(String.init)
      let dom = fields[fields.count - 3]
      let dow = fields[fields.count - 1]
      if (dom.hasPrefix("*") && dom != "*" && dow != "*")
        || (dow.hasPrefix("*") && dow != "*" && dom != "*")
      {
        continue
      }
      guard (try? CronExpression(text)) != nil else { continue }
      let zone = zones[cases.count % zones.count]
      let start = Int64.random(in: 946_684_800...2_524_608_000, using: &rng)  // 2000–2050
      let schedule = try Schedule(ScheduleSpec(.cron(text), timeZone: zone))
      ours.append(schedule.fireTimes(after: start * 1_000_000, count: 5).map { $0 / 1_000_000 })
      let rewritten = fields.map(Self.collapseSingleValueRanges)
      let croniterText = (seconds ? Array(rewritten.dropFirst()) + [rewritten[0]] : rewritten)
        .joined(separator: " ")
      cases.append(Case(expr: croniterText, start: start, count: 5, zone: zone))
    }
    let input = try JSONEncoder().encode(cases)
    let output = try #require(await Self.runPython(Self.script, input: input))
    let theirs = try JSONDecoder().decode([[Int64]].self, from: output)
    try #require(theirs.count == cases.count)
    var disagreements: [String] = []
    for (i, c) in cases.enumerated() where ours[i] != theirs[i] {
      disagreements.append(
        "'\(c.expr)' \(c.zone) after \(c.start): ours \(ours[i]) croniter \(theirs[i])")
    }
    #expect(disagreements.isEmpty, "\(disagreements.prefix(5).joined(separator: "\n"))")
  }
}
