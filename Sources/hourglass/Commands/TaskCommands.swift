import ArgumentParser
import Foundation
import HourglassClient
import HourglassCore

/// `hourglass schedule`: schedules a binary and prints the new task's id.
struct ScheduleCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "schedule",
    abstract: "Schedule a binary: once (--at, --in), by cron (--cron) or at an interval (--every).",
    discussion: """
      Exactly one of --at, --in, --cron and --every. Prints the new task's id (JSON: {"task_id": ...}).

      Examples:
        hourglass schedule --in 10s --file ./backup.sh
        hourglass schedule --cron '0 3 * * *' --time-zone Europe/Paris --file ./report --arg --full --retries 3
        hourglass schedule --at 2026-12-24T18:00:00 --time-zone America/New_York --file ./greet.sh
      """
  )

  @Option(help: "Once, at an RFC 3339 time (2026-03-08T07:00:00Z) or a local time (2026-03-08T02:30:00) in --time-zone.")
  var at: String?

  @Option(name: .customLong("in"), help: "Once, this long from now: 90s, 15m, 1h30m.")
  var delay: String?

  @Option(help: "Repeatedly, by a cron expression (5 fields, 6 with seconds, or @daily...) in --time-zone.")
  var cron: String?

  @Option(help: "Repeatedly, every DURATION: 90s, 15m, 1h30m; at multiples of it since the Unix epoch (15m: at :00, :15, :30, :45).")
  var every: String?

  @Option(help: "IANA time zone for --cron and local --at times, and for showing times.")
  var timeZone: String = "UTC"

  @Option(help: "The executable to run (a script with #! or a binary).")
  var file: String

  // Unconditional: an argument may itself start with a dash (`--arg --full`).
  @Option(name: .customLong("arg"), parsing: .unconditionalSingleValue, help: "An argument for the executable; repeat for more.")
  var arguments: [String] = []

  @Option(help: "How many times a failed run is retried.")
  var retries: Int?

  @Option(help: "How long one attempt may run, e.g. 30s, 10m.")
  var timeout: String?

  @Option(help: "Among runs due together, higher goes first (-100...100).")
  var priority: Int = 0

  @Option(help: "A name for the task.")
  var name: String = ""

  @Option(name: .customLong("operator"), help: "The executor operator that runs the file (exec; noop does nothing, for tests).")
  var operatorName: String = "exec"

  @Option(name: .customLong("dst-gap"), help: "Wall times that daylight saving time skips: run-after (at the first instant after) or skip.")
  var dstGap: String = TaskSchedule.DSTGap.runAfter.rawValue

  @Option(name: .customLong("dst-overlap"), help: "Wall times that daylight saving time repeats: once or both.")
  var dstOverlap: String = TaskSchedule.DSTOverlap.once.rawValue

  @Option(
    help: """
      A key of your own for this Schedule (up to 256 bytes): running the command again with the same \
      key answers with the task the first made instead of making a second. Without it, a fresh key \
      covers the client's own retries only.
      """)
  var idempotencyKey: String?

  @OptionGroup var client: ClientOptions

  func validate() throws {
    let chosen = [at, delay, cron, every].compactMap { $0 }
    if chosen.count != 1 { throw ValidationError("give exactly one of --at, --in, --cron and --every") }
    if let retries, !(0...99).contains(retries) { throw ValidationError("--retries must be 0-99 (at most 100 attempts)") }
    if !(-100...100).contains(priority) { throw ValidationError("--priority must be between -100 and 100") }
    if TaskSchedule.DSTGap(rawValue: dstGap) == nil { throw ValidationError("--dst-gap: \"\(dstGap)\" is not one of run-after, skip") }
    if TaskSchedule.DSTOverlap(rawValue: dstOverlap) == nil { throw ValidationError("--dst-overlap: \"\(dstOverlap)\" is not one of once, both") }
    if let idempotencyKey, idempotencyKey.isEmpty || idempotencyKey.utf8.count > 256 {
      throw ValidationError("--idempotency-key must be 1 to 256 bytes")
    }
  }

  func run() async throws {
    try await runClientCommand {
      let task = try definition(now: Date())
      let scheduled = try await client.withClient { try await $0.schedule(task) }
      switch client.format {
      case .json:
        print(ClientFormatting.text(["task_id": scheduled.taskID, "next_execution": ClientFormatting.utc(scheduled.nextExecution)]))
      case .table:
        print(scheduled.taskID)
        FileHandleOutput.standardError.write("first run: \(ClientFormatting.local(scheduled.nextExecution, zone: timeZone))\n")
      }
    }
  }

  /// The task the flags describe; every problem is a usage error naming the flag.
  func definition(now: Date) throws(CLIFailure) -> TaskDefinition {
    do {
      _ = try ZoneRules.named(timeZone)
    } catch {
      throw CLIFailure.usage("--time-zone: \(error.reason)")
    }
    var schedule: TaskSchedule
    do {
      if let at {
        switch try RFC3339.parse(at, field: "--at") {
        case .instant(let micros): schedule = .at(Date(timeIntervalSince1970: Double(micros) / 1_000_000))
        case .local: schedule = TaskSchedule(kind: .atLocal(at), isRecurring: false)
        }
      } else if let delay {
        schedule = .after(.microseconds(try DurationText.parse(delay, field: "--in")), from: now)
      } else if let cron {
        _ = try CronParser.parse(cron)
        schedule = .cron(cron)
      } else {
        let micros = try DurationText.parse(every ?? "", field: "--every")
        guard micros > 0 else { throw ScheduleValidationError(field: "--every", reason: "must be positive") }
        schedule = .every(.microseconds(micros))
      }
    } catch {
      throw CLIFailure.usage(String(describing: error))
    }
    schedule.timeZone = timeZone
    schedule.dstGap = TaskSchedule.DSTGap(rawValue: dstGap) ?? .runAfter
    schedule.dstOverlap = TaskSchedule.DSTOverlap(rawValue: dstOverlap) ?? .once
    let blob = try Self.readBinary(file)
    var timeoutDuration: Duration?
    if let timeout {
      let micros: Int64
      do {
        micros = try DurationText.parse(timeout, field: "--timeout")
      } catch {
        throw CLIFailure.usage(error.description)
      }
      // 0 would mean "the coordinator's default" on the wire: not what was asked for.
      guard micros > 0 else { throw CLIFailure.usage("--timeout: must be positive") }
      timeoutDuration = .microseconds(micros)
    }
    return TaskDefinition(
      schedule: schedule, blob: blob, operatorName: operatorName, arguments: arguments, name: name, priority: priority,
      retry: retries.map { RetrySettings(maxAttempts: $0 + 1) }, timeout: timeoutDuration, idempotencyKey: idempotencyKey)
  }
}

extension ScheduleCommand {
  /// Most bytes of binary the coordinator takes with no arguments (4 MiB less 16 KiB: a lease
  /// carries the binary in one message, with room for its other fields).
  static let maxBinaryBytes = 4 * 1024 * 1024 - 16 * 1024

  /// Reads `path`, which must be a regular file (after symlinks) no larger than
  /// ``maxBinaryBytes``: checked before reading, so neither `/dev/zero` nor a large file is read
  /// into memory only to be refused.
  static func readBinary(_ path: String) throws(CLIFailure) -> [UInt8] {
    let attributes: [FileAttributeKey: Any]
    do {
      attributes = try FileManager.default.attributesOfItem(atPath: (path as NSString).resolvingSymlinksInPath)
    } catch {
      throw CLIFailure.usage("--file: cannot read \(path)")
    }
    guard attributes[.type] as? FileAttributeType == .typeRegular else {
      throw CLIFailure.usage("--file: \(path) is not a regular file")
    }
    let size = (attributes[.size] as? NSNumber)?.intValue ?? 0
    guard size <= maxBinaryBytes else {
      throw CLIFailure.usage("--file: \(path) has \(size) bytes; a task's binary may have at most \(maxBinaryBytes)")
    }
    guard let contents = FileManager.default.contents(atPath: path) else {
      throw CLIFailure.usage("--file: cannot read \(path)")
    }
    guard contents.count <= maxBinaryBytes else {
      throw CLIFailure.usage("--file: \(path) has \(contents.count) bytes; a task's binary may have at most \(maxBinaryBytes)")
    }
    return Array(contents)
  }
}

/// `hourglass get TASK_ID`.
struct GetCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "get", abstract: "Show one of your tasks: status, last and next execution, schedule.")

  @Argument(help: "The task's id.")
  var taskID: String

  @OptionGroup var client: ClientOptions

  func run() async throws {
    try await runClientCommand {
      let task = try await client.withClient { try await $0.get(taskID) }
      switch client.format {
      case .json: print(ClientFormatting.text(ClientFormatting.json(task)))
      case .table: print(Self.render(task))
      }
    }
  }

  static func render(_ task: TaskDetails) -> String {
    let zone = task.schedule?.timeZone ?? "UTC"
    let rows: [(String, String)] = [
      ("task_id", task.taskID),
      ("name", task.name.isEmpty ? "-" : task.name),
      ("status", task.status.rawValue),
      ("schedule", ClientFormatting.schedule(task.schedule)),
      ("next_execution", ClientFormatting.local(task.nextExecution, zone: zone)),
      ("last_executed", ClientFormatting.local(task.lastExecuted, zone: zone)),
      ("last_run", task.lastRunStatus?.rawValue ?? "-"),
      ("runs_completed", String(task.runsCompleted)),
      ("operator", task.operatorName),
      ("arguments", task.arguments.isEmpty ? "-" : task.arguments.joined(separator: " ")),
      ("priority", String(task.priority)),
      ("attempts", task.retry.map { String($0.maxAttempts) } ?? "-"),
      ("timeout", ClientFormatting.duration(task.timeout)),
      ("blob_sha256", task.blobSHA256.isEmpty ? "-" : task.blobSHA256),
      ("created", ClientFormatting.local(task.created, zone: zone)),
    ]
    return TextTable.render(rows.map { [$0.0, $0.1] })
  }
}

/// `hourglass list`.
struct ListCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "list", abstract: "List your tasks, oldest first (in the order they were created).")

  @Option(help: "Only tasks in this status: \(TaskStatus.allCases.map(\.rawValue).joined(separator: ", ")).")
  var status: String?

  @Option(help: "At most this many tasks (one page).")
  var limit: Int = 50

  @Flag(help: "Fetch every page, not just the first --limit tasks.")
  var allPages = false

  @OptionGroup var client: ClientOptions

  func validate() throws {
    if let status, TaskStatus(rawValue: status) == nil {
      throw ValidationError("--status: \(status) is not one of \(TaskStatus.allCases.map(\.rawValue).joined(separator: ", "))")
    }
    if !(1...1000).contains(limit) { throw ValidationError("--limit must be between 1 and 1000") }
  }

  func run() async throws {
    try await runClientCommand {
      let (tasks, more) = try await client.withClient { client in
        var tasks: [TaskDetails] = []
        var pages = client.list(status: status.flatMap(TaskStatus.init(rawValue:)), pageSize: limit).makeAsyncIterator()
        while let page = try await pages.next() {
          tasks += page
          // Up to --limit tasks unless --all-pages. Filtered by status, a page may hold fewer
          // than asked for (even none) with more after it: pages are read until --limit is
          // reached or none is left.
          if !allPages && tasks.count >= limit {
            return (Array(tasks.prefix(limit)), tasks.count > limit || pages.hasMore)
          }
        }
        return (tasks, false)
      }
      switch client.format {
      case .json:
        print(ClientFormatting.text(tasks.map(ClientFormatting.json)))
      case .table:
        if tasks.isEmpty {
          print("no tasks")
        } else {
          var rows = [["TASK_ID", "STATUS", "NEXT_EXECUTION", "LAST_EXECUTED", "SCHEDULE", "NAME"]]
          for task in tasks {
            let zone = task.schedule?.timeZone ?? "UTC"
            rows.append([
              task.taskID, task.status.rawValue, ClientFormatting.local(task.nextExecution, zone: zone),
              ClientFormatting.local(task.lastExecuted, zone: zone), ClientFormatting.schedule(task.schedule), task.name,
            ])
          }
          print(TextTable.render(rows))
        }
      }
      // On standard error, so that the JSON on standard output stays one array.
      if more { FileHandleOutput.standardError.write("more tasks exist: use --all-pages or a larger --limit\n") }
    }
  }
}

/// `hourglass delete TASK_ID [--cancel-running]`.
struct DeleteCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "delete",
    abstract: "Delete a task so it never runs again.",
    discussion: "A task whose run is in progress is refused unless --cancel-running, which also stops that run on its executor.")

  @Argument(help: "The task's id.")
  var taskID: String

  @Flag(help: "Also cancel a run in progress.")
  var cancelRunning = false

  @OptionGroup var client: ClientOptions

  func run() async throws {
    try await runClientCommand {
      let cancelled: Bool
      do {
        cancelled = try await client.withClient { try await $0.delete(taskID, cancelRunning: cancelRunning) }
      } catch let error as HourglassClientError where error.kind == .failedPrecondition && !cancelRunning {
        throw CLIFailure.failed("\(error.message) (pass --cancel-running to stop it)")
      }
      switch client.format {
      case .json: print(ClientFormatting.text(["task_id": taskID, "deleted": true, "cancelled_run": cancelled]))
      case .table: print(cancelled ? "deleted \(taskID) (its running run was cancelled)" : "deleted \(taskID)")
      }
    }
  }
}

/// `hourglass runs TASK_ID`.
struct RunsCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "runs", abstract: "Show a task's runs and attempts, newest first.")

  @Argument(help: "The task's id.")
  var taskID: String

  @OptionGroup var client: ClientOptions

  func run() async throws {
    try await runClientCommand {
      let (runs, zone) = try await client.withClient { client in
        let runs = try await client.runs(taskID).all()
        // Times are shown in the task's zone: one more call, for tables only.
        guard !runs.isEmpty, self.client.format == .table else { return (runs, "UTC") }
        let task = try await client.get(taskID)
        return (runs, task.schedule?.timeZone ?? "UTC")
      }
      switch client.format {
      case .json:
        print(ClientFormatting.text(runs.map(ClientFormatting.json)))
      case .table:
        if runs.isEmpty {
          print("no runs yet")
          return
        }
        var rows = [["RUN_ID", "ATTEMPT", "STATUS", "SCHEDULED", "STARTED", "FINISHED", "EXIT", "EXECUTOR"]]
        for run in runs {
          rows.append([
            run.runID, String(run.attempt), run.status.rawValue, ClientFormatting.local(run.scheduledAt, zone: zone),
            ClientFormatting.local(run.started, zone: zone), ClientFormatting.local(run.finished, zone: zone),
            run.finished == nil ? "-" : String(run.exitCode), run.executor.isEmpty ? "-" : run.executor,
          ])
        }
        print(TextTable.render(rows, rightAligned: [1]))
        for run in runs where !run.error.isEmpty {
          FileHandleOutput.standardError.write("\(run.runID) attempt \(run.attempt): \(run.error)\n")
        }
      }
    }
  }
}
