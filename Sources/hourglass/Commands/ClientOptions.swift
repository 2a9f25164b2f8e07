import ArgumentParser
import Foundation
import HourglassClient
import HourglassCore
import HourglassProto

/// The connection and output options every client command takes.
///
/// Each connection setting is resolved on its own: the flag, else its `HOURGLASS_*` variable,
/// else the profile file named by `HOURGLASS_PROFILE`, else `.hourglass-dev/profile.json` in
/// the current folder (written by `hourglass dev`).
struct ClientOptions: ParsableArguments {
  @Option(help: "The coordinator, HOST:PORT (env HOURGLASS_SERVER).")
  var server: String?

  @Option(help: "The name the coordinator's certificate carries, if not the host (env HOURGLASS_SERVER_NAME).")
  var serverName: String?

  @Option(help: "PEM file of the private CA (env HOURGLASS_CA).")
  var ca: String?

  @Option(help: "PEM file of your user certificate (env HOURGLASS_CERT).")
  var cert: String?

  @Option(help: "PEM file of your private key (env HOURGLASS_KEY).")
  var key: String?

  @Option(help: "A bearer token, if the coordinator takes tokens (env HOURGLASS_TOKEN).")
  var token: String?

  @Option(help: "Your user id; by default whoever the credentials say (env HOURGLASS_USER).")
  var user: String?

  @Option(help: "How long the call to the coordinator may take, e.g. 10s.")
  var callTimeout: String = "30s"

  @Option(help: "Output format: table or json.")
  var format: OutputFormat = .table

  /// Makes a client from the resolved settings; configuration problems are usage errors.
  func makeClient() throws -> HourglassClient {
    let flags = ClientProfile(server: server, serverName: serverName, ca: ca, cert: cert, key: key, token: token, user: user)
    do {
      let profile = try ClientProfile.resolve(
        flags: flags, environment: ProcessInfo.processInfo.environment, currentDirectory: FileManager.default.currentDirectoryPath)
      var configuration = try profile.configuration()
      configuration.defaultTimeout = try parsedCallTimeout()
      return try HourglassClient(configuration: configuration)
    } catch let error as ClientProfileError {
      throw CLIFailure.usage(error.message)
    }
  }

  /// Runs `body` with a client made from these options, then closes its connection.
  func withClient<T>(_ body: (HourglassClient) async throws -> T) async throws -> T {
    let client = try makeClient()
    do {
      let result = try await body(client)
      await client.close()
      return result
    } catch {
      await client.close()
      throw error
    }
  }

  func parsedCallTimeout() throws(CLIFailure) -> Duration {
    do {
      return .microseconds(try DurationText.parse(callTimeout, field: "--call-timeout"))
    } catch {
      throw CLIFailure.usage(error.description)
    }
  }
}

extension OutputFormat: ExpressibleByArgument {}

/// Why a client command failed, and with which exit status.
enum CLIFailure: Error, CustomStringConvertible {
  /// A bad flag, bad input or missing configuration: exit status 2.
  case usage(String)
  /// The service refused or could not be reached: exit status 1.
  case failed(String)

  var description: String {
    switch self {
    case .usage(let message), .failed(let message): message
    }
  }

  /// Status 2 for invalid input (also when the service refuses it as INVALID_ARGUMENT), 1 for
  /// everything else.
  init(_ error: HourglassClientError) {
    switch error.kind {
    case .invalidArgument: self = .usage(error.message)
    case .unavailable: self = .failed("the coordinator is unavailable: \(error.message)")
    default: self = .failed(error.description)
    }
  }
}

/// Runs a client command body: prints failures on standard error and exits with their status.
func runClientCommand(_ body: () async throws -> Void) async throws {
  do {
    try await body()
  } catch let failure as CLIFailure {
    FileHandleOutput.standardError.write("error: \(failure.description)\n")
    switch failure {
    case .usage: throw ExitCode(2)
    case .failed: throw ExitCode(1)
    }
  } catch let error as HourglassClientError {
    let failure = CLIFailure(error)
    FileHandleOutput.standardError.write("error: \(failure.description)\n")
    if case .usage = failure { throw ExitCode(2) }
    throw ExitCode(1)
  }
}

/// Times and JSON as the client commands print them.
enum ClientFormatting {
  /// A time in `zone` with its offset (table output), or `-`.
  static func local(_ date: Date?, zone: String) -> String {
    guard let date else { return "-" }
    let micros = ProtoTime.micros(date)
    guard let rules = try? ZoneRules.named(zone) else { return RFC3339.formatUTC(micros: micros) }
    return RFC3339.format(micros: micros, offsetSeconds: rules.offset(atMicros: micros))
  }

  /// A time as RFC 3339 UTC (JSON output).
  static func utc(_ date: Date?) -> Any {
    guard let date else { return NSNull() }
    return RFC3339.formatUTC(micros: ProtoTime.micros(date))
  }

  /// A duration as `1h30m`-style text.
  static func duration(_ duration: Duration?) -> String {
    guard let duration else { return "-" }
    return DurationText.format(ProtoTime.micros(duration))
  }

  /// The schedule in one line, e.g. `cron "*/5 * * * *" in Europe/Paris`.
  static func schedule(_ schedule: TaskSchedule?) -> String {
    guard let schedule else { return "-" }
    switch schedule.kind {
    case .at(let date): return "once at \(utc(date))"
    case .atLocal(let text): return "once at \(text) in \(schedule.timeZone)"
    case .cron(let expression): return "cron \"\(expression)\" in \(schedule.timeZone)"
    case .every(let interval, _): return "every \(Self.duration(interval))"
    }
  }

  /// The JSON object of a task; the first four keys are the seed API's.
  static func json(_ task: TaskDetails) -> [String: Any] {
    [
      "task_id": task.taskID,
      "task_status": task.status.rawValue,
      "last_executed": utc(task.lastExecuted),
      "next_execution": utc(task.nextExecution),
      "name": task.name,
      "operator": task.operatorName,
      "schedule": task.schedule.map { schedule($0) } ?? NSNull(),
      "time_zone": task.schedule?.timeZone ?? "UTC",
      "dst_gap": task.schedule?.dstGap.rawValue ?? NSNull(),
      "dst_overlap": task.schedule?.dstOverlap.rawValue ?? NSNull(),
      "is_recurring": task.isRecurring,
      "priority": task.priority,
      "last_run_status": task.lastRunStatus?.rawValue ?? NSNull(),
      "runs_completed": task.runsCompleted,
      "created": utc(task.created),
      "blob_sha256": task.blobSHA256,
      "max_attempts": task.retry?.maxAttempts ?? NSNull(),
      "timeout": task.timeout.map { duration($0) } ?? NSNull(),
      "arguments": task.arguments,
    ]
  }

  /// The JSON object of a run.
  static func json(_ run: RunDetails) -> [String: Any] {
    [
      "run_id": run.runID,
      "task_id": run.taskID,
      "scheduled_at": utc(run.scheduledAt),
      "attempt": run.attempt,
      "status": run.status.rawValue,
      "started": utc(run.started),
      "finished": utc(run.finished),
      "exit_code": Int(run.exitCode),
      "error": run.error,
      "output_tail": String(decoding: run.outputTail, as: UTF8.self),
      "executor": run.executor,
    ]
  }

  /// Pretty, key-sorted JSON text.
  static func text(_ value: Any) -> String {
    guard let data = try? JSONSerialization.data(withJSONObject: value, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]) else {
      return "null"
    }
    return String(decoding: data, as: UTF8.self)
  }
}
