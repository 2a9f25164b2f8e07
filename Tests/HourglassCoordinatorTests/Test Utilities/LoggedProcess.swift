import Foundation
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// An `hourglass` child process whose output (standard output and error together) the test can
/// wait on, line by line: its log is the signal that something happened.
final class LoggedProcess: Sendable {
  let process: Process
  /// The write end of the child's standard input: the child exits when this process dies.
  let lifeline: Pipe
  private let state = Mutex<(text: String, closed: Bool, waiters: [(String, CheckedContinuation<Bool, Never>)])>(("", false, []))

  private init(process: Process, lifeline: Pipe) {
    self.process = process
    self.lifeline = lifeline
  }

  static func start(_ arguments: [String]) throws -> LoggedProcess {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: ProcessSetup.executable)
    process.arguments = arguments
    process.environment = ProcessInfo.processInfo.environment.merging(["HOURGLASS_EXIT_ON_STDIN_EOF": "1"], uniquingKeysWith: { $1 })
    let lifeline = Pipe()
    process.standardInput = lifeline
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let child = LoggedProcess(process: process, lifeline: lifeline)
    let handle = pipe.fileHandleForReading
    Thread {
      while true {
        let data = handle.availableData
        child.append(data)
        if data.isEmpty { return }
      }
    }.start()
    return child
  }

  private func append(_ data: Data) {
    let ready: [(CheckedContinuation<Bool, Never>, Bool)] = state.withLock { state in
      if data.isEmpty { state.closed = true } else { state.text += String(decoding: data, as: UTF8.self) }
      var ready: [(CheckedContinuation<Bool, Never>, Bool)] = []
      state.waiters.removeAll { waiter in
        let found = state.text.contains(waiter.0)
        guard found || state.closed else { return false }
        ready.append((waiter.1, found))
        return true
      }
      return ready
    }
    for (continuation, found) in ready { continuation.resume(returning: found) }
  }

  /// Returns true once the child has printed `text`; false if its output ends first.
  func waitForOutput(containing text: String) async -> Bool {
    await withCheckedContinuation { continuation in
      let now: Bool? = state.withLock { state in
        if state.text.contains(text) { return true }
        if state.closed { return false }
        state.waiters.append((text, continuation))
        return nil
      }
      if let now { continuation.resume(returning: now) }
    }
  }

  /// Everything the child printed so far.
  var output: String { state.withLock { $0.text } }

  /// The port in the listener's "listening" log line (`…127.0.0.1:PORT`), once printed.
  var listeningPort: Int? {
    let text = output
    guard let line = text.split(separator: "\n").first(where: { $0.contains("listening") }),
      let host = line.range(of: "127.0.0.1"),
      let colon = line.range(of: ":", options: .backwards, range: host.upperBound..<line.endIndex)
    else { return nil }
    return Int(line[colon.upperBound...].prefix { $0.isNumber })
  }

  /// SIGTERM (a graceful shutdown), then the exit status (waited for on a thread of its own).
  func terminate() async -> Int32 {
    Glibc.kill(process.processIdentifier, SIGTERM)
    let process = self.process
    return await withCheckedContinuation { continuation in
      Thread {
        process.waitUntilExit()
        continuation.resume(returning: process.terminationStatus)
      }.start()
    }
  }

  /// SIGKILL if still running.
  func kill() {
    guard process.isRunning else { return }
    Glibc.kill(process.processIdentifier, SIGKILL)
    process.waitUntilExit()
  }
}
