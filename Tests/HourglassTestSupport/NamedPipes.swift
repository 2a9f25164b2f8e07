import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// Named pipes (FIFOs) through which the tests' scripts tell them that they ran: a script writes
/// into one, and the test reads it. Opening a FIFO blocks until its other end is opened, so each
/// side runs on a thread of its own and resumes the calling task: an event, never a sleep.

/// Makes a named pipe at `path` with `mode`; throws when it cannot.
public func makeFIFO(_ path: String, mode: mode_t = 0o600) throws {
  guard mkfifo(path, mode) == 0 else { throw NamedPipeError(message: "mkfifo \(path) failed: errno \(errno)") }
}

/// Everything a writer puts into the named pipe at `path`, until it closes its end.
public func readFIFO(_ path: String) async -> String {
  await withCheckedContinuation { (continuation: CheckedContinuation<String, Never>) in
    Thread {
      var bytes: [UInt8] = []
      let fd = open(path, O_RDONLY)
      if fd >= 0 {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
          let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
          if count <= 0 { break }
          bytes += buffer[..<count]
        }
        close(fd)
      }
      continuation.resume(returning: String(decoding: bytes, as: UTF8.self))
    }.start()
  }
}

/// The first line a writer puts into the named pipe at `path` (without its newline).
public func readFIFOLine(_ path: String) async -> String {
  await readFIFO(path).split(separator: "\n").first.map(String.init) ?? ""
}

/// Writes `text` into the named pipe at `path` (once a reader has opened it) and closes it.
public func writeFIFO(_ path: String, _ text: String) async {
  await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
    Thread {
      let fd = open(path, O_WRONLY)
      if fd >= 0 {
        let bytes = Array(text.utf8)
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
      }
      continuation.resume()
    }.start()
  }
}

/// Unblocks a reader waiting on the named pipe at `path` for a writer that will never come (a
/// test giving up): opens the writing end without blocking and closes it at once.
public func releaseFIFOReader(_ path: String) {
  let fd = open(path, O_WRONLY | O_NONBLOCK)
  if fd >= 0 { close(fd) }
}

/// A named pipe could not be made.
public struct NamedPipeError: Error, CustomStringConvertible {
  /// What failed.
  public var message: String
  public var description: String { message }
}
