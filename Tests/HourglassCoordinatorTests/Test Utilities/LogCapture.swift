import HourglassTestSupport
import Logging
import Synchronization

/// Keeps every log event of the loggers it makes; a test waits for the event it expects
/// (a signal, not a sleep).
final class LogCapture: Sendable {
  struct Record: Sendable {
    var level: Logger.Level
    var message: String
    var metadata: Logger.Metadata
  }

  private struct State {
    var records: [Record] = []
    var waiters: [(predicate: @Sendable (Record) -> Bool, continuation: CheckedContinuation<Record, Never>)] = []
  }

  private let state = Mutex(State())

  /// A logger at `level` whose events land here.
  func logger(level: Logger.Level = .debug) -> Logger {
    var logger = Logger(label: "test.capture") { _ in
      EventLogHandler { level, message, metadata in self.append(Record(level: level, message: message, metadata: metadata)) }
    }
    logger.logLevel = level
    return logger
  }

  var records: [Record] { state.withLock { $0.records } }

  /// The first event matching `predicate`, waiting for it if none has come yet.
  func first(where predicate: @escaping @Sendable (Record) -> Bool) async -> Record {
    await withCheckedContinuation { continuation in
      let found: Record? = state.withLock { state in
        if let record = state.records.first(where: predicate) { return record }
        state.waiters.append((predicate, continuation))
        return nil
      }
      if let found { continuation.resume(returning: found) }
    }
  }

  private func append(_ record: Record) {
    let woken: [CheckedContinuation<Record, Never>] = state.withLock { state in
      state.records.append(record)
      var woken: [CheckedContinuation<Record, Never>] = []
      state.waiters.removeAll { waiter in
        guard waiter.predicate(record) else { return false }
        woken.append(waiter.continuation)
        return true
      }
      return woken
    }
    for continuation in woken { continuation.resume(returning: record) }
  }
}
