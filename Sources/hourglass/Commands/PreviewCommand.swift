import ArgumentParser
import Foundation
import HourglassCore

/// `hourglass preview`: prints the next fire times of a schedule without scheduling anything.
///
/// Tools and people script against this interface, so its flags and its JSON output are stable:
/// `--format json` prints a JSON array of RFC 3339 strings carrying the zone's offset.
struct Preview: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "preview",
    abstract: "Print the next fire times of a schedule.",
    discussion: """
      Exactly one of --cron, --every and --at. Times are computed and shown in --time-zone \
      (default UTC). An invalid schedule prints the reason on standard error and exits with status 2.

      Examples:
        hourglass preview --cron '*/5 * * * *' --time-zone America/New_York
        hourglass preview --cron '30 2 * * *' --time-zone America/New_York --from 2026-03-07T00:00:00Z --dst-gap skip
        hourglass preview --every 90m --from 2026-01-01T00:00:00Z --format json
        hourglass preview --at 2026-11-01T01:30:00 --time-zone America/New_York --dst-overlap both
      """
  )

  @Option(
    name: .customLong("cron"),
    help: "A cron expression: 5 fields, 6 with leading seconds, or @daily etc.")
  var cron: String?

  @Option(
    name: .customLong("every"), help: "An interval such as 90s, 15m or 1h30m, anchored at --from.")
  var every: String?

  @Option(
    name: .customLong("at"),
    help: "One time: RFC 3339 (2026-03-08T07:00:00Z) or local (2026-03-08T02:30:00) in --time-zone."
  )
  var at: String?

  @Option(
    name: .customLong("time-zone"), help: "IANA time zone for wall-clock schedules and display.")
  var timeZone: String = "UTC"

  @Option(
    name: .customLong("from"),
    help: "Show fire times strictly after this RFC 3339 instant (default: now).")
  var from: String?

  @Option(name: .customLong("count"), help: "How many fire times to show.")
  var count: Int = 5

  @Option(name: .customLong("dst-gap"), help: "Wall times skipped by DST: run-after or skip.")
  var dstGap: String = DSTPolicy.Gap.runAfter.rawValue

  @Option(name: .customLong("dst-overlap"), help: "Wall times repeated by DST: once or both.")
  var dstOverlap: String = DSTPolicy.Overlap.once.rawValue

  @Option(name: .customLong("format"), help: "Output format: table or json.")
  var format: String = OutputFormat.table.rawValue

  func run() throws {
    let prepared: Prepared
    switch prepare() {
    case .success(let value):
      prepared = value
    case .failure(let error):
      // Status 2 with just the reason: scripts read the first line of stderr.
      FileHandleOutput.standardError.write("error: \(error.description)\n")
      throw ExitCode(2)
    }
    let (outputFormat, schedule, fromMicros) = (prepared.format, prepared.schedule, prepared.from)
    let times = schedule.fireTimes(after: fromMicros, count: count)
    switch outputFormat {
    case .json:
      let items = times.map { "\"" + schedule.format($0) + "\"" }
      print(items.isEmpty ? "[]" : "[\n  " + items.joined(separator: ",\n  ") + "\n]")
    case .table:
      print(PreviewTable.render(times: times, schedule: schedule))
    }
  }

  /// What `run` needs once the flags are checked.
  struct Prepared {
    var format: OutputFormat
    var schedule: Schedule
    var from: Int64
  }

  /// Checks every flag and builds the schedule, or says what is wrong.
  func prepare() -> Result<Prepared, UsageError> {
    do {
      let format = try parseFormat()
      let (schedule, from) = try buildSchedule()
      return .success(Prepared(format: format, schedule: schedule, from: from))
    } catch {
      return .failure(error)
    }
  }

  private func parseFormat() throws(UsageError) -> OutputFormat {
    guard let value = OutputFormat(rawValue: format) else {
      throw UsageError(description: "format: \"\(format)\" is not one of table, json")
    }
    return value
  }

  /// Builds and validates the schedule the flags describe, and the instant to preview after.
  func buildSchedule() throws(UsageError) -> (Schedule, Int64) {
    let kinds = [cron != nil, every != nil, at != nil].filter { $0 }.count
    guard kinds == 1 else {
      throw UsageError(description: "schedule: give exactly one of --cron, --every and --at")
    }
    guard (1...10_000).contains(count) else {
      throw UsageError(description: "count: \(count) out of range 1-10000")
    }
    guard let gap = DSTPolicy.Gap(rawValue: dstGap) else {
      throw UsageError(description: "dst-gap: \"\(dstGap)\" is not one of run-after, skip")
    }
    guard let overlap = DSTPolicy.Overlap(rawValue: dstOverlap) else {
      throw UsageError(description: "dst-overlap: \"\(dstOverlap)\" is not one of once, both")
    }
    do {
      var fromMicros = Date().unixMicros
      if let from { fromMicros = try RFC3339.parseInstant(from, field: "from") }
      let kind: ScheduleSpec.Kind
      if let cron {
        kind = .cron(cron)
      } else if let every {
        kind = .interval(every: try DurationText.parse(every, field: "every"), anchor: fromMicros)
      } else {
        switch try RFC3339.parse(at!, field: "at") {
        case .instant(let micros): kind = .once(.instant(micros))
        case .local(let local): kind = .once(.local(local))
        }
      }
      let spec = ScheduleSpec(kind, timeZone: timeZone, dst: DSTPolicy(gap: gap, overlap: overlap))
      return (try Schedule(spec), fromMicros)
    } catch {
      throw UsageError(description: error.description)
    }
  }
}

/// The aligned text table `hourglass preview` prints by default.
enum PreviewTable {
  /// One row per fire time: its number, the time in the schedule's zone with offset, the weekday,
  /// and the same instant in UTC.
  static func render(times: [Int64], schedule: Schedule) -> String {
    if times.isEmpty { return "no fire times (the schedule has ended)" }
    let weekdays = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    var rows: [[String]] = [["#", "TIME (\(schedule.zone.identifier))", "DAY", "UTC"]]
    for (i, t) in times.enumerated() {
      let offset = schedule.zone.offset(atMicros: t)
      let localDays = (t / 1_000_000 + Int64(offset)) / 86_400
      let weekday = Int(((localDays + 4) % 7 + 7) % 7)
      rows.append([
        String(i + 1), schedule.format(t), weekdays[weekday], RFC3339.formatUTC(micros: t),
      ])
    }
    return TextTable.render(rows, rightAligned: [0])
  }
}
