import Foundation
import HourglassCoordinator
import HourglassCore
import HourglassProto
import HourglassRPC
import SwiftProtobuf
import Testing

/// A delete that cancels a run reaches it whatever the dispatcher is doing with its lease.
@Suite("Coordinator: cancels against dispatch", .timeLimit(.minutes(3)))
struct CancelRaceTests {
  @Test("a run cancelled after its lease committed but before the dispatcher recorded it never goes out")
  func cancelBeforeTheGrantIsSent() async throws {
    try await Harness.with(observed: true) { harness in
      let observed = try #require(harness.observed)
      let alice = harness.client("alice")
      let first = try await alice.schedule(once: 1)
      let second = try await alice.schedule(once: 5)
      let executor = try await harness.executor("exec-1")
      executor.grant(1)
      observed.holdNextLeasesAfterCommit()
      harness.advance(seconds: 1)
      // The first run is leased in the store; the dispatcher waits for the call to return.
      await observed.waitForLeaseTransactions(1)
      let deleted = try await alice.delete(first, cancelRunning: true)
      #expect(deleted.cancelledRun)
      observed.releaseLeases()
      // The credit was never used: the first message this executor gets is the second run's.
      harness.advance(seconds: 4)
      #expect(try await executor.nextLease().taskID == second)
      await executor.close()
    }
  }

  @Test("a run cancelled while a later grant of its batch is being built never goes out, not even before its cancel")
  func cancelWithinABatch() async throws {
    try await Harness.with(observed: true) { harness in
      let observed = try #require(harness.observed)
      let alice = harness.client("alice")
      let blobs = [Array("#!/bin/sh\necho a\n".utf8), Array("#!/bin/sh\necho b\n".utf8)]
      var tasks: [String] = []
      for blob in blobs { tasks.append(try await alice.schedule(once: 1, blob: blob)) }
      let later = try await alice.schedule(once: 5)
      let executor = try await harness.executor("exec-1")
      executor.grant(2)
      // The batch's second blob read waits: the first run's grant is built, not yet handed on.
      observed.holdBlobRead(2)
      harness.advance(seconds: 1)
      let held = try #require(await observed.waitForHeldBlobRead())
      let heldTask = held == BlobDigest(of: blobs[0]) ? tasks[0] : tasks[1]
      let first = tasks[0] == heldTask ? tasks[1] : tasks[0]
      #expect(try await alice.delete(first, cancelRunning: true).cancelledRun)
      observed.releaseBlobRead()
      #expect(try await executor.nextLease().taskID == heldTask)
      // The cancelled run's credit came back: the next message is the later task's lease.
      harness.advance(seconds: 4)
      #expect(try await executor.nextLease().taskID == later)
      await executor.close()
    }
  }

  @Test("a stale result of an earlier attempt does not make the dispatcher forget the current lease")
  func staleResultKeepsTheCurrentLease() async throws {
    try await Harness.with { harness in
      let alice = harness.client("alice")
      var retry = Hourglass_V1_RetryPolicy()
      retry.maxAttempts = 2
      retry.initialBackoff = Google_Protobuf_Duration(seconds: 5)
      let id = try await alice.schedule(once: 1, retry: retry)
      let executor = try await harness.executor("exec-1")
      executor.grant(1)
      harness.advance(seconds: 1)
      let attempt1 = try await executor.nextLease()
      #expect(try await executor.report(attempt1, outcome: .failed, exitCode: 1))
      executor.grant(1)
      harness.advance(seconds: 5)
      let attempt2 = try await executor.nextLease()
      #expect(attempt2.fence > attempt1.fence)
      // Attempt 1's result again (a resend): refused, and attempt 2's lease is still known...
      #expect(try await executor.report(attempt1, outcome: .failed, exitCode: 1) == false)
      _ = try await alice.delete(id, cancelRunning: true)
      // ...so the delete's cancel reaches its executor.
      let message = try await executor.next()
      guard case .cancel(let cancel)? = message.kind else {
        Issue.record("expected a CancelRun, got \(message)")
        return
      }
      #expect(cancel.runID == attempt2.runID)
      #expect(cancel.fence == attempt2.fence)
      await executor.close()
    }
  }
}
