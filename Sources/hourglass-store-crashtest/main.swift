import Foundation
import HourglassCore
import HourglassStore
import HourglassStoreSQLite
import Synchronization

// hourglass-store-crashtest: the child process of the store's crash-safety test.
//
//   hourglass-store-crashtest <database> <ack-log> <seed> [writers]
//
// Opens the SQLite store, then keeps `writers` concurrent writers inserting small batches of
// 1 KB tasks. After each insert is acknowledged it appends the batch's ids to <ack-log> and syncs
// that file, then prints one line ("ack <n>") to standard output. The test kills it with SIGKILL at
// a moment of its choosing and checks that every id in the log survived.
#if canImport(Glibc)
  import Glibc
#endif

let arguments = CommandLine.arguments
guard arguments.count >= 4, let seed = UInt64(arguments[3]) else {
  FileHandle.standardError.write(Data("usage: hourglass-store-crashtest <db> <ack-log> <seed> [writers]\n".utf8))
  exit(2)
}
let databasePath = arguments[1]
let logPath = arguments[2]
let writers = arguments.count > 4 ? Int(arguments[4]) ?? 8 : 8

let logFD = open(logPath, O_WRONLY | O_APPEND | O_CREAT, 0o644)
guard logFD >= 0 else {
  FileHandle.standardError.write(Data("cannot open \(logPath)\n".utf8))
  exit(2)
}

/// Serialises appends to the acknowledgement log.
final class AckLog: Sendable {
  private let lock = Mutex(0)
  let fd: Int32
  init(fd: Int32) { self.fd = fd }

  func append(_ ids: [TaskID]) {
    let text = ids.map { "\($0)\n" }.joined()
    lock.withLock { count in
      let bytes = Array(text.utf8)
      var offset = 0
      while offset < bytes.count {
        let n = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        if n <= 0 { exit(3) }
        offset += n
      }
      if fsync(fd) != 0 { exit(3) }
      count += 1
      print("ack \(count)")
      // The test reads every line; when it has gone (it died, or killed us late), stop writing
      // instead of running on as an orphan.
      if fflush(nil) != 0 { exit(4) }
    }
  }
}

let log = AckLog(fd: logFD)
let store = try await SQLiteTaskStore(configuration: .defaults(path: databasePath))
print("ready")
fflush(nil)

let payload = TaskBlob([UInt8](repeating: 0x5A, count: 512))
try await withThrowingTaskGroup(of: Void.self) { group in
  for writer in 0..<writers {
    group.addTask {
      var rng = SystemRandomNumberGenerator()
      var local = seed &+ UInt64(writer)
      while true {
        local &+= 1
        let count = Int(local % 4) + 1
        let now = Int64(Date().timeIntervalSince1970 * 1_000_000)
        let tasks = (0..<count).map { _ in
          NewTask(
            id: TaskID(unixMilliseconds: now / 1000, using: &rng), owner: "crash",
            name: "crash-\(writer)", operatorName: "exec", blob: payload,
            arguments: [String(repeating: "x", count: 400)], firstRunMicros: now + 3_600_000_000,
            createdAtMicros: now)
        }
        try await store.insert(tasks)
        log.append(tasks.map(\.id))
      }
    }
  }
  try await group.waitForAll()
}
