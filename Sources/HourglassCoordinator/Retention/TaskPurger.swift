import CoreMetrics
import HourglassCore
import HourglassStore
import Logging

/// Keeps the store's size bounded: every `purgeInterval`, removes the rows of tasks deleted
/// longer than `deletedTaskRetention` ago and of tasks finished longer than
/// `finishedTaskRetention` ago, with their runs, idempotency keys and the blobs no other task
/// refers to. Without it a store that takes one-shot tasks grows by every task ever scheduled.
///
/// Work goes in transactions of at most `purgeBatch` tasks, one after the other, so the store's
/// writer (SQLite's only one) is never held long and dispatch's lease transactions interleave.
/// In a cluster every coordinator purges; PostgreSQL's `SKIP LOCKED` keeps two purges apart.
///
/// Each pass also walks on through the stored blobs (`blobSweepBatch` of them) and removes any
/// no task refers to: the purges remove their own tasks' blobs, and the walk catches those left
/// some other way, at a pace that visits every blob once per `blobs ÷ blobSweepBatch` passes.
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
    /// Blobs removed with those tasks.
    var blobs = 0
  }

  /// A pass every `purgeInterval` (the first one interval after start), each followed by a step
  /// of the blob walk, until cancelled.
  func run() async {
    // From a random point: coordinators sharing a store then walk different parts of it.
    var blobCursor = BlobDigest(bytes: (0..<32).map { _ in UInt8.random(in: 0...255) })
    while !Task.isCancelled {
      do { try await clock.sleep(untilMicros: clock.nowMicros() + configuration.purgeIntervalMicros) } catch { return }
      await pass()
      blobCursor = await sweepBlobs(after: blobCursor)
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
      let deleted = try await drain(counter: metrics.tasksPurgedDeleted) {
        try await store.purgeDeleted(before: now - configuration.deletedTaskRetentionMicros, limit: $0)
      }
      outcome.deleted = deleted.tasks
      outcome.blobs = deleted.blobs
      if let retention = configuration.finishedTaskRetentionMicros {
        let finished = try await drain(counter: metrics.tasksPurgedFinished) {
          try await store.purgeFinished(before: now - retention, limit: $0)
        }
        outcome.finished = finished.tasks
        outcome.blobs += finished.blobs
      }
    } catch {
      if Task.isCancelled { return outcome }
      logger.warning("purging old tasks failed; the next pass tries again", metadata: ["hourglass.error": "\(error)"])
    }
    if outcome != Outcome() {
      logger.info(
        "old tasks purged",
        metadata: [
          "hourglass.deleted": "\(outcome.deleted)", "hourglass.finished": "\(outcome.finished)",
          "hourglass.blobs": "\(outcome.blobs)",
        ])
    }
    return outcome
  }

  /// One step of the blob walk from `cursor`; returns where the next step goes on (nil: from
  /// the first blob again). A failing store is logged and the step is tried again next time.
  func sweepBlobs(after cursor: BlobDigest?) async -> BlobDigest? {
    guard configuration.blobSweepBatch > 0 else { return nil }
    do {
      let step = try await store.sweepBlobs(after: cursor, limit: configuration.blobSweepBatch)
      metrics.blobsRemoved.increment(by: step.removed)
      if step.removed > 0 {
        logger.info("blobs without a task removed", metadata: ["hourglass.blobs": "\(step.removed)"])
      }
      return step.next
    } catch {
      if !Task.isCancelled {
        logger.warning("the blob walk failed; the next pass tries again", metadata: ["hourglass.error": "\(error)"])
      }
      return cursor
    }
  }

  /// Calls `purge` with the batch size until it removes fewer tasks than that; returns what all
  /// the calls removed.
  private func drain(counter: Counter, _ purge: (Int) async throws -> PurgeResult) async throws -> PurgeResult {
    var total = PurgeResult(tasks: 0, blobs: 0)
    while !Task.isCancelled {
      let removed = try await purge(configuration.purgeBatch)
      total.tasks += removed.tasks
      total.blobs += removed.blobs
      counter.increment(by: removed.tasks)
      metrics.blobsRemoved.increment(by: removed.blobs)
      if removed.tasks < configuration.purgeBatch { break }
    }
    return total
  }
}
