import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// A child process whose standard output is read line by line, for tests that kill it.
final class ChildProcess: @unchecked Sendable {
  let process = Process()
  private let stdout = Pipe()
  private let stderr = Pipe()
  private var buffer: [UInt8] = []

  init(executable: String, arguments: [String]) throws {
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    process.standardOutput = stdout
    process.standardError = stderr
    try process.run()
  }

  /// Reads lines until `predicate` accepts one (true) or the output ends (false). The blocking
  /// reads run on a dispatch thread, not on the test's cooperative threads.
  func waitForLine(where predicate: @escaping @Sendable (String) -> Bool) async -> Bool {
    await withCheckedContinuation { continuation in
      DispatchQueue.global().async {
        continuation.resume(returning: self.readLines(until: predicate))
      }
    }
  }

  private func readLines(until predicate: (String) -> Bool) -> Bool {
    let fd = stdout.fileHandleForReading.fileDescriptor
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
      while let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
        let line = String(decoding: buffer[..<newline], as: UTF8.self)
        buffer.removeSubrange(...newline)
        if predicate(line) { return true }
      }
      let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
      if n <= 0 { return false }
      buffer.append(contentsOf: chunk[..<n])
    }
  }

  /// Sends SIGKILL and waits for the process to be reaped.
  func kill() async {
    _ = Glibc.kill(process.processIdentifier, SIGKILL)
    await waitForExit()
  }

  func waitForExit() async {
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
      DispatchQueue.global().async {
        self.process.waitUntilExit()
        continuation.resume()
      }
    }
  }

  /// Whatever the child wrote to standard error (after it has exited).
  func standardError() -> String {
    String(decoding: stderr.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
  }

  /// A built executable of this package, found beside the test binary in the build products folder.
  static func productPath(_ name: String) -> String? {
    var candidates: [String] = []
    if let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
      candidates.append(URL(fileURLWithPath: exe).deletingLastPathComponent().path)
    }
    candidates.append(Bundle.main.bundleURL.deletingLastPathComponent().path)
    candidates.append(Bundle.main.bundleURL.path)
    for directory in candidates {
      let path = "\(directory)/\(name)"
      if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    return nil
  }
}
