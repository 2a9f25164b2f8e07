import Foundation
import HourglassExecutor
import HourglassTestSupport

#if canImport(Glibc)
  import Glibc
#endif

/// A scratch directory for one test, removed by `remove()`.
struct ScratchDirectory {
  let path: String

  init() throws {
    let base = NSTemporaryDirectory().hasSuffix("/") ? String(NSTemporaryDirectory().dropLast()) : NSTemporaryDirectory()
    var template = Array((base + "/hourglass-executor-test-XXXXXX").utf8CString)
    guard template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else {
      throw FakeCoordinatorError("mkdtemp failed: \(errno)")
    }
    path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
  }

  /// Makes a named pipe in the directory and returns its path.
  func fifo(_ name: String) throws -> String {
    let fifoPath = path + "/" + name
    try makeFIFO(fifoPath)
    return fifoPath
  }

  func remove() {
    try? FileManager.default.removeItem(atPath: path)
  }
}

/// Whether `pid` names a live process: not absent, and not a zombie waiting for its reaper.
func isAlive(_ pid: pid_t) -> Bool {
  guard kill(pid, 0) == 0 else { return false }
  guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
    let close = stat.lastIndex(of: ")")
  else { return false }
  let state = stat[stat.index(close, offsetBy: 2)]
  return state != "Z" && state != "X"
}

/// A lease for `script`, with its digest.
func scriptRequest(_ script: String, arguments: [String] = [], runID: String = "run-1") -> RunRequest {
  let blob = Array(script.utf8)
  return RunRequest(
    runID: runID, taskID: "task-1", scheduledAt: Date(timeIntervalSince1970: 1_790_000_000), attempt: 2, fence: 9,
    blob: blob, blobSHA256: ExecOperator.digest(of: blob), arguments: arguments, timeout: nil)
}
