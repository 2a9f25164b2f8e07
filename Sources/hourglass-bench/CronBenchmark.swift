import ArgumentParser
import Foundation
import HourglassCore

/// `hourglass-bench cron`: next-fire computations per second on one core.
///
/// Each case chains `nextFireTime(after:)` from a fixed start (each answer is the next question),
/// so the loop measures the real per-call cost including zone lookups and DST handling, and
/// crosses DST transitions along the way. The headline case is `*/5 * * * *` in America/New_York.
struct CronBenchmark: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "cron",
    abstract: "Measure next-fire computations per second (build with -c release)."
  )

  @Flag(name: .customLong("json"), help: "Print the report as JSON.")
  var json = false

  @Option(name: .customLong("iterations"), help: "Next-fire computations per case and round.")
  var iterations: Int = 2_000_000

  @Option(name: .customLong("rounds"), help: "Rounds per case; the best round is reported.")
  var rounds: Int = 5

  struct Case {
    var name: String
    var spec: ScheduleSpec
  }

  func run() throws {
    guard iterations > 0, rounds > 0 else {
      throw ValidationError("iterations and rounds must be positive")
    }
    let cases: [Case] = [
      Case(
        name: "*/5 * * * * America/New_York",
        spec: .cron("*/5 * * * *", timeZone: "America/New_York")),
      Case(
        name: "0 9 * * 1-5 Europe/London", spec: .cron("0 9 * * 1-5", timeZone: "Europe/London")),
      Case(
        name: "30 2 * * * America/New_York (DST gap daily)",
        spec: .cron("30 2 * * *", timeZone: "America/New_York")),
      Case(
        name: "*/10 * * * * * Australia/Lord_Howe (seconds)",
        spec: .cron("*/10 * * * * *", timeZone: "Australia/Lord_Howe")),
      Case(
        name: "0 9 * * * Asia/Kathmandu (no DST since 1986)",
        spec: .cron("0 9 * * *", timeZone: "Asia/Kathmandu")),
      Case(name: "0 0 29 2 * UTC (leap day)", spec: .cron("0 0 29 2 *")),
      Case(name: "interval 15m", spec: .interval(every: 900_000_000)),
    ]
    let start: Int64 = 1_767_225_600_000_000  // 2026-01-01T00:00:00Z
    // Chains restart here, so every case measures present-day dates (30 years, many DST changes).
    let horizon: Int64 = start + 30 * 365 * 86_400_000_000
    var report = BenchmarkReport(benchmark: "cron")
    report.parameters["iterations"] = String(iterations)
    report.parameters["rounds"] = String(rounds)
    report.parameters["start"] = RFC3339.formatUTC(micros: start)
    report.parameters["horizon"] = RFC3339.formatUTC(micros: horizon) + " (chains restart at start)"
    report.parameters["method"] = "chained Schedule.nextFireTime(after:), best round, one thread"
    #if DEBUG
      report.parameters["build"] = "debug (figures not meaningful)"
    #else
      report.parameters["build"] = "release"
    #endif
    for benchCase in cases {
      let schedule = try Schedule(benchCase.spec)
      let perRound = iterations
      var best = Double.infinity
      var checksum: Int64 = 0
      for _ in 0..<rounds {
        var t = start
        let began = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<perRound {
          guard let next = schedule.nextFireTime(after: t), next < horizon else {
            t = start
            continue
          }
          t = next
          checksum &+= next
        }
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - began) / 1e9
        best = min(best, elapsed)
      }
      report.results.append([
        "name": .string(benchCase.name),
        "ops_per_second": .int(Int(Double(perRound) / best)),
        "ns_per_op": .double(best * 1e9 / Double(perRound)),
        "iterations": .int(perRound),
        "checksum": .string(String(UInt64(bitPattern: checksum), radix: 16)),
      ])
    }
    try measureRandomStarts(into: &report, start: start, horizon: horizon)
    report.print(json: json)
  }

  /// The headline case again, but each call starts from an unrelated random instant in the next
  /// 30 years, so nothing is gained from the previous answer being close by.
  private func measureRandomStarts(
    into report: inout BenchmarkReport, start: Int64, horizon: Int64
  )
    throws
  {
    let schedule = try Schedule(.cron("*/5 * * * *", timeZone: "America/New_York"))
    var state: UInt64 = 0x5eed
    let starts: [Int64] = (0..<4096).map { _ in
      state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
      return start + Int64((state >> 11) % UInt64(horizon - start))
    }
    var best = Double.infinity
    var checksum: Int64 = 0
    for _ in 0..<rounds {
      let began = DispatchTime.now().uptimeNanoseconds
      for i in 0..<iterations {
        checksum &+= schedule.nextFireTime(after: starts[i & 4095]) ?? 0
      }
      best = min(best, Double(DispatchTime.now().uptimeNanoseconds - began) / 1e9)
    }
    report.results.append([
      "name": .string("*/5 * * * * America/New_York (random starts)"),
      "ops_per_second": .int(Int(Double(iterations) / best)),
      "ns_per_op": .double(best * 1e9 / Double(iterations)),
      "iterations": .int(iterations),
      "checksum": .string(String(UInt64(bitPattern: checksum), radix: 16)),
    ])
  }
}
