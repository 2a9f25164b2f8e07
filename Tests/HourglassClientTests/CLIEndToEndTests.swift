import Foundation
import HourglassTestSupport
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// The `hourglass` executable, built beside the test bundle.
enum CLI {
  static var executable: String {
    URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("hourglass").path
  }

  /// An environment without any HOURGLASS_* variable of the machine running the tests.
  static var cleanEnvironment: [String: String] {
    ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("HOURGLASS_") }
  }

  struct Result {
    var status: Int32
    var stdout: String
    var stderr: String

    var json: Any? { try? JSONSerialization.jsonObject(with: Data(stdout.utf8)) }
  }

  /// Runs `hourglass ARGS` in `directory` to completion.
  static func run(_ arguments: [String], in directory: String, environment: [String: String] = cleanEnvironment) async throws -> Result {
    let (exit, stdout, stderr) = try await TestProcess.run(executable, arguments: arguments, environment: environment, directory: directory)
    guard case .exited(let status) = exit else {
      throw CLIError(message: "hourglass \(arguments.joined(separator: " ")) \(exit): \(stderr)")
    }
    return Result(status: status, stdout: stdout, stderr: stderr)
  }
}

/// `hourglass dev` as a child process; ready once it prints its banner.
struct DevProcess {
  let child: TestProcess
  /// What it printed up to and including its banner's last line.
  let banner: String

  /// The port of its `/metrics` listener, from the banner.
  var metricsPort: Int? {
    guard let range = banner.range(of: "Metrics: http://127.0.0.1:") else { return nil }
    return Int(banner[range.upperBound...].prefix { $0.isNumber })
  }

  static func start(in directory: String, arguments: [String]) async throws -> DevProcess {
    // The child exits when this test process dies (its standard input is a lifeline).
    let child = try TestProcess.start(
      CLI.executable, arguments: ["dev"] + arguments,
      environment: CLI.cleanEnvironment.merging(["HOURGLASS_EXIT_ON_STDIN_EOF": "1"], uniquingKeysWith: { $1 }),
      directory: directory, input: .lifeline, errorOutput: .discarded)
    // A dev server that never gets ready is killed, which ends the wait below with an error.
    let watchdog = Task {
      try await Task.sleep(for: .seconds(120))
      child.kill()
    }
    defer { watchdog.cancel() }
    // The banner is the readiness signal: it is printed once the coordinator listens and the
    // profile is written.
    let marker = "Ctrl-C stops."
    guard await child.waitForOutput(containing: marker) else {
      child.kill()
      throw CLIError(message: "hourglass dev exited before it was ready: \(child.output)")
    }
    let output = child.output
    let markerEnd = output.range(of: marker)!.upperBound
    let lineEnd = output[markerEnd...].firstIndex(of: "\n").map { output.index(after: $0) } ?? output.endIndex
    return DevProcess(child: child, banner: String(output[..<lineEnd]))
  }

  /// SIGKILL if still running (cleanup after a failed test); returns at once.
  func kill() { child.kill() }

  /// SIGTERM, then how it ended.
  func stop() async -> TestProcessExit { await child.terminate() }

  /// SIGTERM, then how it ended and everything printed after the banner.
  func stopAndRead() async -> (exit: TestProcessExit, output: String) {
    let exit = await child.terminate()
    await child.waitForOutputEnd()
    return (exit, String(decoding: child.output.utf8.dropFirst(banner.utf8.count), as: UTF8.self))
  }
}

/// GET http://127.0.0.1:PORT/PATH over a plain socket; the response body.
func httpGet(port: Int, path: String) throws -> String {
  let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
  guard fd >= 0 else { throw CLIError(message: "socket failed") }
  defer { close(fd) }
  var address = sockaddr_in()
  address.sin_family = sa_family_t(AF_INET)
  address.sin_port = in_port_t(UInt16(port).bigEndian)
  address.sin_addr.s_addr = inet_addr("127.0.0.1")
  let connected = withUnsafePointer(to: &address) {
    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
  }
  guard connected == 0 else { throw CLIError(message: "cannot connect to 127.0.0.1:\(port)") }
  // A listener that accepts and never answers fails the test in 30 s rather than holding it.
  var limit = timeval(tv_sec: 30, tv_usec: 0)
  for option in [SO_RCVTIMEO, SO_SNDTIMEO] {
    setsockopt(fd, SOL_SOCKET, option, &limit, socklen_t(MemoryLayout<timeval>.size))
  }
  let request = Array("GET \(path) HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".utf8)
  guard send(fd, request, request.count, 0) == request.count else { throw CLIError(message: "send failed") }
  var bytes: [UInt8] = []
  var buffer = [UInt8](repeating: 0, count: 65_536)
  while true {
    let count = recv(fd, &buffer, buffer.count, 0)
    if count < 0 && errno == EINTR { continue }
    if count < 0 { throw CLIError(message: "no response from 127.0.0.1:\(port)\(path) (errno \(errno))") }
    if count == 0 { break }
    bytes += buffer[0..<count]
  }
  let text = String(decoding: bytes, as: UTF8.self)
  guard let body = text.range(of: "\r\n\r\n") else { throw CLIError(message: "no HTTP response: \(text)") }
  return String(text[body.upperBound...])
}

/// The value of an unlabelled sample in Prometheus text.
func sample(_ name: String, in text: String) -> Double? {
  for line in text.split(separator: "\n") where line.hasPrefix(name + " ") {
    return Double(line.dropFirst(name.count + 1).split(separator: " ").first ?? "")
  }
  return nil
}

struct CLIError: Error, CustomStringConvertible {
  var message: String
  var description: String { message }
}

/// Blocks a thread on a named pipe until the scheduled script writes to it: the signal that the
/// run happened. Gives up (and fails) after `limit`.
func awaitFIFO(_ path: String, limit: Duration) async throws -> String {
  try await withThrowingTaskGroup(of: String?.self) { group in
    group.addTask { await readFIFO(path) }
    group.addTask {
      try await Task.sleep(for: limit)
      return nil
    }
    let first = try await group.next()!
    group.cancelAll()
    guard let text = first else {
      // Unblock the reader thread before failing.
      releaseFIFOReader(path)
      throw CLIError(message: "the scheduled script did not run within \(limit)")
    }
    return text
  }
}

@Suite("The hourglass CLI end to end, against `hourglass dev`", .serialized)
struct CLIEndToEndTests {
  @Test("schedule a script, see it succeed, find it in list and runs, delete it")
  func tour() async throws {
    let folder = NSTemporaryDirectory() + "hourglass-cli-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let dev = try await DevProcess.start(in: folder, arguments: ["--port", "0", "--executors", "1", "--metrics-listen", "127.0.0.1:0"])
    defer { dev.kill() }
    let profile = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: folder + "/.hourglass-dev/profile.json"))) as? [String: Any]
    #expect((profile?["server"] as? String)?.hasPrefix("127.0.0.1:") == true)

    let fifo = folder + "/ran.fifo"
    try makeFIFO(fifo)
    let script = folder + "/job.sh"
    try "#!/bin/sh\necho \"$HOURGLASS_RUN_ID $1\" > \(fifo)\n".write(toFile: script, atomically: true, encoding: .utf8)

    // An argument may start with a dash.
    let scheduled = try await CLI.run(
      ["schedule", "--in", "2s", "--file", script, "--arg", "--full", "--name", "tour", "--format", "json"], in: folder)
    #expect(scheduled.status == 0, "\(scheduled.stderr)")
    let taskID = try #require((scheduled.json as? [String: Any])?["task_id"] as? String)

    let ran = try await awaitFIFO(fifo, limit: .seconds(60)).trimmingCharacters(in: .whitespacesAndNewlines).split(separator: " ")
    let runID = String(ran.first ?? "")
    #expect(runID.hasPrefix(taskID + "@"))
    #expect(ran.dropFirst().first == "--full", "the script's first argument: \(ran)")

    // The script has run; its result is recorded right after it exits.
    var task: [String: Any] = [:]
    let deadline = ContinuousClock.now + .seconds(30)
    while ContinuousClock.now < deadline {
      let got = try await CLI.run(["get", taskID, "--format", "json"], in: folder)
      #expect(got.status == 0, "\(got.stderr)")
      task = got.json as? [String: Any] ?? [:]
      if task["task_status"] as? String == "succeeded" { break }
    }
    #expect(task["task_status"] as? String == "succeeded")
    #expect(task["runs_completed"] as? Int == 1)
    #expect(task["task_id"] as? String == taskID)
    #expect(task["last_executed"] is String)
    #expect(task["next_execution"] is NSNull)

    let listed = try await CLI.run(["list", "--format", "json"], in: folder)
    #expect(listed.status == 0)
    let ids = (listed.json as? [[String: Any]])?.compactMap { $0["task_id"] as? String } ?? []
    #expect(ids.contains(taskID))
    let table = try await CLI.run(["list"], in: folder)
    #expect(table.stdout.hasPrefix("TASK_ID"))
    #expect(table.stdout.contains(taskID))

    let runs = try await CLI.run(["runs", taskID, "--format", "json"], in: folder)
    #expect(runs.status == 0, "\(runs.stderr)")
    let run = try #require((runs.json as? [[String: Any]])?.first)
    #expect(run["run_id"] as? String == runID)
    #expect(run["status"] as? String == "succeeded")
    #expect(run["exit_code"] as? Int == 0)
    #expect(try await CLI.run(["runs", taskID], in: folder).stdout.contains(runID))

    // `hourglass dev` serves the metrics of its coordinator and executors.
    let metrics = try httpGet(port: try #require(dev.metricsPort), path: "/metrics")
    #expect(sample("hourglass_tasks_scheduled_total", in: metrics) == 1)
    #expect(sample("hourglass_runs_succeeded_total", in: metrics) == 1)
    #expect(sample("hourglass_executors_connected", in: metrics) == 1)

    let deleted = try await CLI.run(["delete", taskID, "--format", "json"], in: folder)
    #expect(deleted.status == 0, "\(deleted.stderr)")
    #expect((deleted.json as? [String: Any])?["deleted"] as? Bool == true)
    let gone = try await CLI.run(["get", taskID, "--format", "json"], in: folder)
    #expect(gone.status == 1)
    #expect(gone.stderr.contains("NOT_FOUND"))

    // A key of one's own makes the command safe to run again; the DST policies reach the task.
    let keyed = [
      "schedule", "--cron", "30 2 * * *", "--time-zone", "America/New_York", "--dst-gap", "skip", "--dst-overlap", "both",
      "--file", script, "--operator", "noop", "--idempotency-key", "nightly-1", "--format", "json",
    ]
    let first = try await CLI.run(keyed, in: folder)
    let again = try await CLI.run(keyed, in: folder)
    #expect(first.status == 0 && again.status == 0, "\(first.stderr) \(again.stderr)")
    let keyedID = try #require((first.json as? [String: Any])?["task_id"] as? String)
    #expect((again.json as? [String: Any])?["task_id"] as? String == keyedID, "the same key answers with the same task")
    let keyedTask = try await CLI.run(["get", keyedID, "--format", "json"], in: folder)
    #expect((keyedTask.json as? [String: Any])?["dst_gap"] as? String == "skip")
    #expect((keyedTask.json as? [String: Any])?["dst_overlap"] as? String == "both")

    let (exit, output) = await dev.stopAndRead()
    #expect(exit == .exited(0))
    #expect(output.contains("Stopped: the coordinator and its executors drained"), "\(output)")
  }

  @Test("invalid input exits with status 2 and says why; a missing task exits 1")
  func invalidInput() async throws {
    let folder = NSTemporaryDirectory() + "hourglass-cli-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let script = folder + "/job.sh"
    try "#!/bin/sh\ntrue\n".write(toFile: script, atomically: true, encoding: .utf8)

    // Refused before any connection is attempted.
    let badCron = try await CLI.run(["schedule", "--cron", "61 * * * *", "--file", script], in: folder)
    #expect(badCron.status == 2)
    #expect(badCron.stderr.contains("minute"))
    let twoKinds = try await CLI.run(["schedule", "--in", "5s", "--every", "1m", "--file", script], in: folder)
    #expect(twoKinds.status == 2)
    #expect(twoKinds.stderr.contains("exactly one"))
    let badZone = try await CLI.run(["schedule", "--cron", "* * * * *", "--time-zone", "Mars/Olympus", "--file", script], in: folder)
    #expect(badZone.status == 2)
    #expect(badZone.stderr.contains("--time-zone"))
    let noFile = try await CLI.run(["schedule", "--in", "5s", "--file", folder + "/missing"], in: folder)
    #expect(noFile.status == 2)
    #expect(noFile.stderr.contains("--file"))
    let notAFile = try await CLI.run(["schedule", "--in", "5s", "--file", "/dev/zero"], in: folder)
    #expect(notAFile.status == 2)
    #expect(notAFile.stderr.contains("not a regular file"), "\(notAFile.stderr)")
    let large = folder + "/large.bin"
    _ = FileManager.default.createFile(atPath: large, contents: Data(count: 4 * 1024 * 1024))
    let tooLarge = try await CLI.run(["schedule", "--in", "5s", "--file", large], in: folder)
    #expect(tooLarge.status == 2)
    #expect(tooLarge.stderr.contains("at most"), "\(tooLarge.stderr)")
    let noTime = try await CLI.run(["schedule", "--in", "5s", "--file", script, "--timeout", "0s"], in: folder)
    #expect(noTime.status == 2)
    #expect(noTime.stderr.contains("--timeout: must be positive"), "\(noTime.stderr)")
    let clockBound = try await CLI.run(
      ["coordinator", "--store", "postgres://u@h/db", "--cluster-clock-bound-ms", "300", "--ca", "ca.pem", "--cert", "c.pem", "--key", "c.key"],
      in: folder)
    #expect(clockBound.status == 2)
    #expect(clockBound.stderr.contains("at most half of --skew-bound-ms"), "\(clockBound.stderr)")
    let badStatus = try await CLI.run(["list", "--status", "sleeping"], in: folder)
    #expect(badStatus.status == 2)
    let sameCoordinatorTwice = try await CLI.run(
      ["executor", "--coordinator", "127.0.0.1:7443", "--coordinator", "127.0.0.1:7443", "--ca", "ca.pem", "--cert", "e.pem", "--key", "e.key"],
      in: folder)
    #expect(sameCoordinatorTwice.status == 2)
    #expect(sameCoordinatorTwice.stderr.contains("--coordinator 127.0.0.1:7443 is given twice"), "\(sameCoordinatorTwice.stderr)")
    let unknownUser = try await CLI.run(
      ["executor", "--coordinator", "127.0.0.1:7443", "--ca", "ca.pem", "--cert", "e.pem", "--key", "e.key", "--run-as", "no-such-user-hg"], in: folder)
    #expect(unknownUser.status == 2)
    #expect(unknownUser.stderr.contains("--run-as no-such-user-hg: no such user"), "\(unknownUser.stderr)")
    let advertiseOnSQLite = try await CLI.run(
      ["coordinator", "--store", "sqlite:tasks.db", "--advertise", "10.0.0.1:7443", "--ca", "ca.pem", "--cert", "c.pem", "--key", "c.key"], in: folder)
    #expect(advertiseOnSQLite.status == 2)
    #expect(advertiseOnSQLite.stderr.contains("--advertise applies to a PostgreSQL store"), "\(advertiseOnSQLite.stderr)")
    let advertiseWithoutPort = try await CLI.run(
      ["coordinator", "--store", "postgres://u@h/db", "--advertise", "coord-1.example", "--ca", "ca.pem", "--cert", "c.pem", "--key", "c.key"],
      in: folder)
    #expect(advertiseWithoutPort.status == 2)
    #expect(advertiseWithoutPort.stderr.contains("--advertise: expected HOST:PORT"), "\(advertiseWithoutPort.stderr)")
    let noServer = try await CLI.run(["list"], in: folder)
    #expect(noServer.status == 2)
    #expect(noServer.stderr.contains("hourglass dev"))

    // Refused by the service.
    let dev = try await DevProcess.start(in: folder, arguments: ["--port", "0", "--executors", "1", "--metrics-listen", "127.0.0.1:0"])
    defer { dev.kill() }
    let notAnID = try await CLI.run(["get", "not-a-task-id"], in: folder)
    #expect(notAnID.status == 2)
    #expect(notAnID.stderr.contains("task_id"))
    let missing = try await CLI.run(["get", "01890a5d-ac96-774b-bcce-b302099a8057"], in: folder)
    #expect(missing.status == 1)
    #expect(missing.stderr.contains("NOT_FOUND"))
    #expect(await dev.stop() == .exited(0))
  }
}
