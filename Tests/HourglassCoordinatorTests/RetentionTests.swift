import Foundation
import HourglassObservability
import HourglassRPC
import Prometheus
import Testing

@testable import HourglassCoordinator

@Suite("Retention: finished and deleted tasks are purged", .timeLimit(.minutes(3)))
struct RetentionTests {
  @Test("a finished task goes once its retention has passed, a deleted one after its grace; a pending one stays")
  func purgePass() async throws {
    let registry = PrometheusCollectorRegistry()
    try await Harness.with(
      configure: {
        $0.finishedTaskRetentionMicros = 24 * 3_600_000_000
        $0.deletedTaskRetentionMicros = 3_600_000_000
        $0.purgeIntervalMicros = 3_650 * 24 * 3_600_000_000  // passes only when the test calls them
      }, metricsFactory: HourglassMetrics.makeFactory(registry: registry)
    ) { harness in
      let alice = harness.client("alice")
      let finished = try await alice.schedule(once: 10)
      let pending = try await alice.schedule(once: 48 * 3600)
      // Its own binary, which no other task uses: it goes with the task.
      let deleted = try await alice.schedule(once: 7200, blob: Array("#!/bin/sh\nexit 0\n".utf8))
      _ = try await alice.delete(deleted)

      let executor = try await harness.executor("exec-1")
      executor.grant(1)
      harness.advance(seconds: 10)
      let lease = try await executor.nextLease()
      #expect(lease.taskID == finished)
      #expect(try await executor.report(lease, outcome: .succeeded))
      #expect(await harness.coordinator.purger.pass() == TaskPurger.Outcome(deleted: 0, finished: 0))
      #expect(try await alice.get(finished).taskStatus == .succeeded)

      harness.advance(seconds: 3600)
      #expect(
        await harness.coordinator.purger.pass() == TaskPurger.Outcome(deleted: 1, finished: 0, blobs: 1), "the deleted task and its binary, after its hour")
      // Retention counts from the run's scheduled time, start + 10 s: exactly 24 h later it is kept.
      harness.advance(seconds: 23 * 3600)
      #expect(await harness.coordinator.purger.pass() == TaskPurger.Outcome(deleted: 0, finished: 0))
      harness.advance(seconds: 1)
      #expect(
        await harness.coordinator.purger.pass() == TaskPurger.Outcome(deleted: 0, finished: 1, blobs: 0),
        "the pending task still uses the finished one's binary")

      await #expect { _ = try await alice.get(finished) } throws: { ($0 as? RPCError)?.code == .notFound }
      #expect(try await alice.get(pending).taskStatus == .scheduled)
      let text = try PrometheusText(registry.emitToString())
      #expect(text.value("hourglass_tasks_purged_total", ["reason": "deleted"]) == 1)
      #expect(text.value("hourglass_tasks_purged_total", ["reason": "finished"]) == 1)
      #expect(text.value("hourglass_blobs_removed_total") == 1)
      await executor.close()
    }
  }

  @Test("each pass walks on through blobSweepBatch blobs and starts over after the last")
  func blobWalkSteps() async throws {
    try await Harness.with(configure: {
      $0.blobSweepBatch = 1
      $0.purgeIntervalMicros = 3_650 * 24 * 3_600_000_000
    }) { harness in
      let alice = harness.client("alice")
      _ = try await alice.schedule(once: 60, blob: Array("#!/bin/sh\nexit 1\n".utf8))
      _ = try await alice.schedule(once: 60, blob: Array("#!/bin/sh\nexit 2\n".utf8))
      let purger = harness.coordinator.purger
      let first = await purger.sweepBlobs(after: nil)
      let second = await purger.sweepBlobs(after: first)
      #expect(first != nil && second != nil && first != second, "one blob a step")
      #expect(await purger.sweepBlobs(after: second) == nil, "past the last blob: start over")
    }
  }

  @Test("the purge runs by itself every purge interval")
  func purgeLoop() async throws {
    let interval: Int64 = 7_777_777  // no other sleeper of the coordinator uses this deadline
    try await Harness.with(configure: {
      $0.purgeIntervalMicros = interval
      $0.deletedTaskRetentionMicros = 0
    }) { harness in
      let alice = harness.client("alice")
      _ = try await alice.delete(try await alice.schedule(once: 3600))
      #expect(try await harness.store.counts().tasks[.deleted] == 1)
      var first = harness.clock.expectSleeper(until: Harness.start + interval).makeAsyncIterator()
      _ = await first.next()
      // The pass runs between the first sleep and the second: the second sleep is the signal.
      var second = harness.clock.expectSleeper(until: Harness.start + 2 * interval).makeAsyncIterator()
      harness.clock.advance(byMicros: interval)
      _ = await second.next()
      #expect(try await harness.store.counts().tasks[.deleted, default: 0] == 0)
    }
  }

  @Test("a recurring task keeps the runs of its run-history retention, counted back from its latest")
  func runHistory() async throws {
    try await Harness.with(configure: { $0.runHistoryRetentionMicros = 150_000_000 }) { harness in
      let alice = harness.client("alice")
      let id = try await alice.schedule(every: 60, recurring: true)
      let executor = try await harness.executor("exec-1")
      executor.grant(1)
      for round in 0..<4 {
        if round > 0 { harness.advance(seconds: 60) }
        let lease = try await executor.nextLease()
        #expect(try await executor.report(lease, outcome: .succeeded))
        executor.grant(1)
      }
      // Runs at 0, 60, 120 and 180 s; the last result forgets those before 180 − 150 = 30 s.
      let runs = try await alice.runs(id)
      #expect(runs.map(\.runID) == [180, 120, 60].map { "\(id)@\(Harness.start + Int64($0) * 1_000_000)" })
      #expect(try await alice.get(id).runsCompleted == 4, "forgotten runs still count")
      await executor.close()
    }
  }

  @Test("retention settings are validated")
  func validation() {
    var configuration = CoordinatorConfiguration.defaults
    configuration.finishedTaskRetentionMicros = 0
    #expect(throws: ConfigurationError.self) { try configuration.validate() }
    configuration.finishedTaskRetentionMicros = nil
    #expect(throws: Never.self) { try configuration.validate() }
    configuration.runHistoryRetentionMicros = -1
    #expect(throws: ConfigurationError.self) { try configuration.validate() }
    configuration.runHistoryRetentionMicros = nil
    configuration.purgeBatch = 0
    #expect(throws: ConfigurationError.self) { try configuration.validate() }
  }
}
