import CoreMetrics
import HourglassStore
import Logging

/// Keeps the store's size bounded: every `purgeInterval`, removes the rows of tasks deleted
/// longer than `deletedTaskRetention` ago and of tasks finished longer than
/// `finishedTaskRetention` ago, with their runs and idempotency keys. Without it a store that
/// takes one-shot tasks grows by every task ever scheduled.
///
/// Work goes in transactions of at most `purgeBatch` tasks, one after the other, so the store's
/// writer (SQLite's only one) is never held long and dispatch's lease transactions interleave.
/// In a cluster every coordinator purges; PostgreSQL's `SKIP LOCKED` keeps two purges apart.
struct TaskPurger: Sendable {
  let store: any TaskStore
  let clock: any CoordinatorClock
  let configuration: CoordinatorConfiguration
  let logger: Logger
  let metrics: CoordinatorMetrics

  /// What one pass removed.
  struct Outcome: Sendable, Hashable {
    /// Deleted tasks purged.
    var deleted = 0
    /// Finished tasks purged.
    var finished = 0
  }

  /// A pass every `purgeInterval` (the first one interval after start), until cancelled.
  func run() async {
    while !Task.isCancelled {
      do { try await clock.sleep(untilMicros: clock.nowMicros() + configuration.purgeIntervalMicros) } catch { return }
      await pass()
    }
  }

  /// One pass at the clock's current time: deleted tasks, then finished ones, batch after
  /// batch until a batch comes back short. A failing store is logged and tried again at the
  /// next pass; what was purged stays purged.
  @discardableResult
  func pass() async -> Outcome {
    let now = clock.nowMicros()
    var outcome = Outcome()
    do {
      outcome.deleted = try await drain(counter: metrics.tasksPurgedDeleted) {
        try await store.purgeDeleted(before: now - configuration.deletedTaskRetentionMicros, limit: $0)
      }
      if let retention = configuration.finishedTaskRetentionMicros {
        outcome.finished = try await drain(counter: metrics.tasksPurgedFinished) {
          try await store.purgeFinished(before: now - retention, limit: $0)
        }
      }
    } catch {
      if Task.isCancelled { return outcome }
      logger.warning("purging old tasks failed; the next pass tries again", metadata: ["hourglass.error": "\(error)"])
    }
    if outcome != Outcome() {
      logger.info("old tasks purged", metadata: ["hourglass.deleted": "\(outcome.deleted)", "hourglass.finished": "\(outcome.finished)"])
    }
    return outcome
  }

  /// Calls `purge` with the batch size until it removes fewer than that; returns the total.
  private func drain(counter: Counter, _ purge: (Int) async throws -> Int) async throws -> Int {
    var total = 0
    while !Task.isCancelled {
      let removed = try await purge(configuration.purgeBatch)
      total += removed
      counter.increment(by: removed)
      if removed < configuration.purgeBatch { break }
    }
    return total
  }
}
