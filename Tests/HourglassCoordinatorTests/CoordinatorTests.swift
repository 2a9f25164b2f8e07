import Foundation
import HourglassCoordinator
import HourglassProto
import HourglassRPC
import SwiftProtobuf
import Testing

@Suite("Coordinator: scheduling, leases and results")
struct CoordinatorTests {
  @Test("a one-shot task runs once at its due time; status, last and next execution are right")
  func oneShot() async throws {
    try await Harness.with { harness in
      let alice = harness.client("alice")
      let id = try await alice.schedule(once: 10)
      let before = try await alice.get(id)
      #expect(before.taskStatus == .scheduled)
      #expect(before.nextExecution.seconds == Harness.start / 1_000_000 + 10)
      #expect(!before.hasLastExecuted)

      let executor = try await harness.executor("exec-1")
      executor.grant(2)
      harness.advance(seconds: 10)
      let lease = try await executor.nextLease()
      #expect(lease.taskID == id)
      #expect(lease.runID == "\(id)@\(Harness.start + 10_000_000)")
      #expect(lease.attempt == 1)
      #expect(try await alice.get(id).taskStatus == .running)

      #expect(try await executor.report(lease, outcome: .succeeded))
      let after = try await alice.get(id)
      #expect(after.taskStatus == .succeeded)
      #expect(after.lastExecuted.seconds == Harness.start / 1_000_000 + 10)
      #expect(!after.hasNextExecution)
      let runs = try await alice.runs(id)
      #expect(runs.count == 1)
      #expect(runs.first?.status == .succeeded)
      await executor.close()
    }
  }

  @Test("a recurring task runs on schedule")
  func recurring() async throws {
    try await Harness.with { harness in
      let alice = harness.client("alice")
      let id = try await alice.schedule(every: 60, recurring: true)
      let executor = try await harness.executor("exec-1")
      executor.grant(1)
      var scheduled: [String] = []
      for round in 0..<3 {
        // The anchor (now) is the first fire time; then every 60 s.
        if round > 0 { harness.advance(seconds: 60) }
        let lease = try await executor.nextLease()
        scheduled.append(lease.runID)
        #expect(try await executor.report(lease, outcome: .succeeded))
        executor.grant(1)
      }
      #expect(scheduled == [0, 1, 2].map { "\(id)@\(Harness.start + Int64($0) * 60_000_000)" })
      let info = try await alice.get(id)
      #expect(info.taskStatus == .scheduled)
      #expect(info.nextExecution.seconds == Harness.start / 1_000_000 + 180)
      #expect(info.lastExecuted.seconds == Harness.start / 1_000_000 + 120)
      await executor.close()
    }
  }

  @Test("a failing run is retried with backoff, then dead")
  func retries() async throws {
    try await Harness.with { harness in
      let alice = harness.client("alice")
      var retry = Hourglass_V1_RetryPolicy()
      retry.maxAttempts = 3
      retry.initialBackoff = Google_Protobuf_Duration(seconds: 5)
      retry.multiplier = 2
      let id = try await alice.schedule(once: 1, retry: retry)
      let executor = try await harness.executor("exec-1")
      executor.grant(1)
      harness.advance(seconds: 1)
      var runID = ""
      for attempt in 1...3 {
        let lease = try await executor.nextLease()
        #expect(lease.attempt == UInt32(attempt))
        if attempt > 1 { #expect(lease.runID == runID) }  // a retry is the same run
        runID = lease.runID
        #expect(try await executor.report(lease, outcome: .failed, exitCode: 3))
        executor.grant(1)
        if attempt < 3 {
          #expect(try await alice.get(id).taskStatus == .retrying)
          // Backoff: 5 s, then 10 s (no jitter set).
          harness.advance(seconds: attempt == 1 ? 5 : 10)
        }
      }
      let info = try await alice.get(id)
      #expect(info.taskStatus == .failed)
      let runs = try await alice.runs(id)
      #expect(runs.count == 1)
      #expect(runs.first?.status == .dead)
      #expect(runs.first?.attempt == 3)
      #expect(runs.first?.exitCode == 3)
      await executor.close()
    }
  }

  @Test("a stale result with an old fence is refused; the current one is recorded once")
  func staleFence() async throws {
    try await Harness.with { harness in
      let (alice, id, executor, lease) = try await harness.leasedOneShot()
      #expect(try await executor.report(lease, outcome: .succeeded, fence: lease.fence + 1) == false)
      #expect(try await executor.report(lease, outcome: .succeeded, fence: lease.fence - 1) == false)
      #expect(try await executor.report(lease, outcome: .succeeded))
      #expect(try await executor.report(lease, outcome: .failed) == false)
      #expect(try await alice.get(id).taskStatus == .succeeded)
      await executor.close()
    }
  }

  @Test("a renewal with the current fence extends the lease; a stale one is refused and ends nothing")
  func renewal() async throws {
    try await Harness.with { harness in
      let (alice, id, executor, lease) = try await harness.leasedOneShot()
      let stale = try await executor.renew(lease, fence: lease.fence + 1)
      #expect(!stale.renewed)
      // Renewed at t = 25 s: the lease (30 s) now lasts until t = 55 s, so recovery at t = 40 s
      // must leave it alone, and the run's result is still recorded.
      harness.advance(seconds: 24)
      let renewed = try await executor.renew(lease)
      #expect(renewed.renewed)
      #expect(renewed.runID == lease.runID)
      #expect(renewed.leaseDuration.seconds == 30)
      harness.advance(seconds: 15)
      #expect(try await executor.report(lease, outcome: .succeeded))
      #expect(try await alice.get(id).taskStatus == .succeeded)
      await executor.close()
    }
  }

  @Test("an executor killed mid-run: the run goes out again after lease expiry, one result recorded")
  func executorKilled() async throws {
    try await Harness.with { harness in
      let alice = harness.client("alice")
      let id = try await alice.schedule(once: 1)
      let first = try await harness.executor("exec-1")
      first.grant(1)
      harness.advance(seconds: 1)
      let lost = try await first.nextLease()
      await first.kill()

      let second = try await harness.executor("exec-2")
      second.grant(1)
      // Not before the lease (30 s) plus the skew bound (0.5 s) has run out.
      harness.advance(seconds: 20)
      harness.advance(seconds: 11)
      let again = try await second.nextLease()
      #expect(again.runID == lost.runID)
      #expect(again.fence > lost.fence)
      #expect(again.attempt == 2)
      #expect(try await second.report(again, outcome: .succeeded))

      // The first executor comes back and reports its stale attempt: refused.
      let returning = try await harness.executor("exec-1")
      #expect(try await returning.report(lost, outcome: .failed) == false)
      let runs = try await alice.runs(id)
      #expect(runs.count == 1)
      #expect(runs.first?.status == .succeeded)
      await second.close()
      await returning.close()
    }
  }

  @Test("a run whose executor is lost on every attempt is dead after the last, not sent forever", .timeLimit(.minutes(3)))
  func lostOnEveryAttempt() async throws {
    try await Harness.with { harness in
      let alice = harness.client("alice")
      var retry = Hourglass_V1_RetryPolicy()
      retry.maxAttempts = 2
      let id = try await alice.schedule(once: 1, retry: retry)
      harness.advance(seconds: 1)
      for attempt in 1...2 {
        let executor = try await harness.executor("exec-\(attempt)")
        executor.grant(1)
        if attempt > 1 { harness.advance(seconds: 31) }  // the lease (30 s) and the skew bound
        let lease = try await executor.nextLease()
        #expect(lease.attempt == UInt32(attempt))
        await executor.kill()
      }
      harness.advance(seconds: 31)
      await harness.coordinator.waitUntilRecorded(1)
      let info = try await alice.get(id)
      #expect(info.taskStatus == .failed)
      let runs = try await alice.runs(id)
      #expect(runs.map(\.status) == [.dead])
      #expect(runs.first?.error.contains("lease ran out") == true)
    }
  }

  @Test("deleting a pending task stops it from ever running")
  func deletePending() async throws {
    try await Harness.with { harness in
      let alice = harness.client("alice")
      let doomed = try await alice.schedule(once: 10)
      let later = try await alice.schedule(once: 20)
      _ = try await alice.delete(doomed)
      let executor = try await harness.executor("exec-1")
      executor.grant(2)
      harness.advance(seconds: 30)
      // The first lease to arrive is the later task's: the deleted one never went out.
      let lease = try await executor.nextLease()
      #expect(lease.taskID == later)
      await #expect(throws: RPCError.self) { _ = try await alice.get(doomed) }
      await executor.close()
    }
  }

  @Test("deleting a running task: FAILED_PRECONDITION, or the executor is told to cancel")
  func deleteRunning() async throws {
    try await Harness.with { harness in
      let (alice, id, executor, lease) = try await harness.leasedOneShot()
      await #expect {
        _ = try await alice.delete(id)
      } throws: { ($0 as? RPCError)?.code == .failedPrecondition }
      let response = try await alice.delete(id, cancelRunning: true)
      #expect(response.cancelledRun)
      let message = try await executor.next()
      guard case .cancel(let cancel)? = message.kind else {
        Issue.record("expected a cancel, got \(message)")
        return
      }
      #expect(cancel.runID == lease.runID)
      #expect(cancel.fence == lease.fence)
      // Its late result is not recorded.
      #expect(try await executor.report(lease, outcome: .cancelled) == false)
      await executor.close()
    }
  }

  @Test("another user's task looks exactly like a missing one")
  func crossUser() async throws {
    try await Harness.with { harness in
      let alice = harness.client("alice")
      let bob = harness.client("bob")
      let id = try await alice.schedule(once: 100)
      let missing = "01900000-0000-7000-8000-000000000000"
      for target in [id, missing] {
        await #expect { _ = try await bob.get(target) } throws: { ($0 as? RPCError)?.code == .notFound }
        await #expect { _ = try await bob.delete(target) } throws: { ($0 as? RPCError)?.code == .notFound }
        await #expect { _ = try await bob.runs(target) } throws: { ($0 as? RPCError)?.code == .notFound }
      }
      #expect(try await bob.list().isEmpty)
      #expect(try await alice.list().map(\.taskID) == [id])
      // And bob may not act as alice.
      var request = Hourglass_V1_GetRequest()
      request.userID = "alice"
      request.taskID = id
      await #expect {
        let _: Hourglass_V1_GetResponse = try await bob.rpc.unary(MethodDescriptor(service: "hourglass.v1.TaskService", method: "Get"), request: request)
      } throws: { ($0 as? RPCError)?.code == .permissionDenied }
    }
  }

  @Test("invalid schedules are refused with the field and the reason")
  func invalidSchedule() async throws {
    try await Harness.with { harness in
      var request = Hourglass_V1_ScheduleRequest()
      request.taskBlob = Data([1])
      request.schedule.cron = .with { $0.expression = "0 24 * * *" }
      let rpc = harness.client("alice").rpc
      await #expect {
        let _: Hourglass_V1_ScheduleResponse = try await rpc.unary(MethodDescriptor(service: "hourglass.v1.TaskService", method: "Schedule"), request: request)
      } throws: { error in
        guard let error = error as? RPCError else { return false }
        return error.code == .invalidArgument && error.message.contains("hour 24 out of range 0-23")
      }
    }
  }

  @Test("each invalid Schedule field is refused with its name as the request spells it")
  func fieldNames() async throws {
    try await Harness.with { harness in
      let rpc = harness.client("alice").rpc
      await Self.expectRefused(
        [
          ("schedule.interval.every", { $0.schedule.interval = .with { $0.every.seconds = -5 } }),
          ("schedule.time_zone", { $0.schedule.timeZone = "Mars/Olympus" }),
          (
            "schedule.not_after",
            {
              $0.schedule.notBefore.seconds = Harness.start / 1_000_000 + 100
              $0.schedule.notAfter.seconds = Harness.start / 1_000_000 + 50
            }
          ),
          ("schedule.misfire", { $0.schedule.misfire = .UNRECOGNIZED(9) }),
          ("schedule.overlap", { $0.schedule.overlap = .UNRECOGNIZED(7) }),
          ("schedule.once", { $0.schedule.once = .with { $0.instant.seconds = Harness.start / 1_000_000 - 3600 } }),
          ("retry.max_attempts", { $0.retry.maxAttempts = 1000 }),
          ("operator", { $0.operator = "e\u{301}xec" }),
          ("name", { $0.name = String(repeating: "n", count: 1025) }),
          // NUL: PostgreSQL's text refuses it, and would fail every Schedule of the batch.
          ("name", { $0.name = "a\u{0}b" }),
          ("idempotency_key", { $0.idempotencyKey = "key\u{0}" }),
          ("arguments[1]", { $0.arguments = ["ok", "bad\u{0}"] }),
        ], rpc: rpc)
      // A timeout of zero is the server's default (tasks.proto), not an error.
      var zero = Self.refusalBase
      zero.timeout = Google_Protobuf_Duration(seconds: 0)
      let _: Hourglass_V1_ScheduleResponse = try await rpc.unary(Self.scheduleMethod, request: zero)
    }
  }

  static let scheduleMethod = MethodDescriptor(service: "hourglass.v1.TaskService", method: "Schedule")

  /// A valid Schedule request, which each case of ``expectRefused(_:rpc:)`` breaks in one field.
  static var refusalBase: Hourglass_V1_ScheduleRequest {
    var base = Hourglass_V1_ScheduleRequest()
    base.taskBlob = Data([1])
    base.schedule.cron = .with { $0.expression = "* * * * *" }
    return base
  }

  /// Sends ``refusalBase`` changed by each case; each must be refused with INVALID_ARGUMENT
  /// whose message starts with the case's field name.
  static func expectRefused(_ cases: [(String, (inout Hourglass_V1_ScheduleRequest) -> Void)], rpc: RPCClient) async {
    for (field, mutate) in cases {
      var request = refusalBase
      mutate(&request)
      await #expect("\(field)") {
        let _: Hourglass_V1_ScheduleResponse = try await rpc.unary(scheduleMethod, request: request)
      } throws: { error in
        guard let error = error as? RPCError else { return false }
        return error.code == .invalidArgument && error.message.hasPrefix(field + ":")
      }
    }
  }

  @Test("a List page stops early rather than outgrow one message, and its token goes on from there")
  func listPagesByBytes() async throws {
    try await Harness.with { harness in
      let alice = harness.client("alice")
      var ids: Set<String> = []
      for _ in 0..<3 {
        var request = Hourglass_V1_ScheduleRequest()
        request.userID = "alice"
        request.operator = "noop"
        request.schedule.cron = .with { $0.expression = "0 0 * * *" }
        request.isRecurring = true
        // 1.5 MiB of arguments each: three would not fit one 4 MiB answer.
        request.arguments = Array(repeating: String(repeating: "a", count: 100_000), count: 15)
        let response: Hourglass_V1_ScheduleResponse = try await alice.rpc.unary(
          MethodDescriptor(service: UserClient.service, method: "Schedule"), request: request)
        ids.insert(response.taskID)
      }
      var seen: [String] = []
      var token = ""
      var pages = 0
      repeat {
        var request = Hourglass_V1_ListRequest()
        request.userID = "alice"
        request.pageToken = token
        let page: Hourglass_V1_ListResponse = try await alice.rpc.unary(MethodDescriptor(service: UserClient.service, method: "List"), request: request)
        seen += page.tasks.map(\.taskID)
        token = page.nextPageToken
        pages += 1
      } while !token.isEmpty && pages < 10
      #expect(Set(seen) == ids)
      #expect(seen.count == 3)
      #expect(pages >= 2)
    }
  }

  @Test("times and durations out of their protobuf range are refused with the field, and the coordinator stays up")
  func outOfRangeTimes() async throws {
    try await Harness.with { harness in
      let rpc = harness.client("alice").rpc
      await Self.expectRefused(
        [
          ("timeout", { $0.timeout.seconds = .max }),
          ("schedule.once.instant", { $0.schedule.once = .with { $0.instant.seconds = .min } }),
          ("schedule.interval.every", { $0.schedule.interval = .with { $0.every.seconds = .max } }),
          ("schedule.not_after", { $0.schedule.notAfter.seconds = .max }),
          (
            "schedule.jitter",
            {
              $0.schedule.jitter.nanos = -5
              $0.schedule.jitter.seconds = 1
            }
          ),
          ("retry.max_backoff", { $0.retry.maxBackoff.seconds = .min }),
        ], rpc: rpc)
      // Still serving.
      let _: Hourglass_V1_ScheduleResponse = try await rpc.unary(Self.scheduleMethod, request: Self.refusalBase)
    }
  }

  @Test(
    "a grant written after its lease transaction waited gives the executor only what is left of the lease",
    .timeLimit(.minutes(3)))
  func grantCarriesTheRemainingLease() async throws {
    try await Harness.with(observed: true) { harness in
      let observed = try #require(harness.observed)
      let alice = harness.client("alice")
      _ = try await alice.schedule(once: 1)
      let executor = try await harness.executor("exec-1")
      executor.grant(1)
      observed.holdNextLeasesAfterCommit()
      harness.advance(seconds: 1)
      await observed.waitForLeaseTransactions(1)
      // The lease (30 s) counts from before its transaction; 10 s pass before the grant is written.
      harness.advance(seconds: 10)
      observed.releaseLeases()
      let lease = try await executor.nextLease()
      #expect(lease.leaseDuration.seconds == 20)
      await executor.close()
    }
  }

  @Test("a binary and arguments too large for a lease's message are refused at Schedule")
  func payloadTooLarge() async throws {
    try await Harness.with { harness in
      let alice = harness.client("alice")
      let limit = 4 * 1024 * 1024 - 16 * 1024
      await #expect {
        _ = try await alice.schedule(once: 10, blob: Array(repeating: 0x41, count: limit + 1))
      } throws: { error in
        guard let error = error as? RPCError else { return false }
        return error.code == .invalidArgument && error.message.hasPrefix("task_blob:") && error.message.contains("\(limit)")
      }
      _ = try await alice.schedule(once: 10, blob: Array(repeating: 0x41, count: limit))
    }
  }

  @Test("batches: leases due together go out in one LeaseGrantBatch; a RunResultBatch is recorded and answered by one ResultAckBatch, each result fenced")
  func batches() async throws {
    try await Harness.with { harness in
      let alice = harness.client("alice")
      var ids: Set<String> = []
      for _ in 0..<3 { ids.insert(try await alice.schedule(once: 5)) }
      harness.advance(seconds: 6)
      let executor = try await harness.executor("exec-1", batches: true)
      executor.grant(3)
      var grants: [Hourglass_V1_LeaseGrant] = []
      while grants.count < 3 {
        let message = try await executor.next()
        switch message.kind {
        case .leases(let batch)?: grants += batch.grants
        case .lease(let grant)?: grants.append(grant)
        default: Issue.record("expected leases, got \(message)")
        }
      }
      #expect(Set(grants.map(\.taskID)) == ids)
      // One stale fence among them: refused, the others recorded.
      executor.send {
        $0.results = .with {
          $0.results = grants.enumerated().map { index, grant in
            .with {
              $0.runID = grant.runID
              $0.fence = index == 1 ? grant.fence + 1 : grant.fence
              $0.outcome = .succeeded
            }
          }
        }
      }
      let reply = try await executor.next()
      guard case .resultAcks(let acks)? = reply.kind else { Issue.record("expected a ResultAckBatch, got \(reply)"); return }
      #expect(acks.acks.map(\.runID) == grants.map(\.runID))
      #expect(acks.acks.map(\.recorded) == [true, false, true])
      #expect(try await alice.get(grants[0].taskID).taskStatus == .succeeded)
      #expect(try await alice.get(grants[1].taskID).taskStatus == .running)
      #expect(try await alice.get(grants[2].taskID).taskStatus == .succeeded)
      // The refused one is still leased: its right result is recorded once.
      #expect(try await executor.report(grants[1], outcome: .succeeded))
      #expect(try await executor.report(grants[1], outcome: .succeeded) == false)
      await executor.close()
    }
  }

  @Test("runs due together go out by priority")
  func priority() async throws {
    try await Harness.with { harness in
      let alice = harness.client("alice")
      let low = try await alice.schedule(once: 5, priority: -5)
      let high = try await alice.schedule(once: 5, priority: 50)
      let middle = try await alice.schedule(once: 5, priority: 0)
      harness.advance(seconds: 6)
      let executor = try await harness.executor("exec-1", slots: 1)
      executor.grant(1)
      var order: [String] = []
      for _ in 0..<3 {
        let lease = try await executor.nextLease()
        order.append(lease.taskID)
        #expect(try await executor.report(lease, outcome: .succeeded))
        executor.grant(1)
      }
      #expect(order == [high, middle, low])
      await executor.close()
    }
  }

  @Test(
    "the loader pages through more than a page of runs due at one instant",
    .timeLimit(.minutes(3)))
  func loaderPagesOneInstant() async throws {
    try await Harness.with(configure: { configuration in
      configuration.loadBatch = 3
      configuration.loadAheadMicros = 10_000_000
    }) { harness in
      let alice = harness.client("alice")
      // Beyond the loaded window, so the loader (not the Schedule RPC) queues them; with four
      // partitions, one partition holds more than three of the twenty.
      var ids: Set<String> = []
      for _ in 0..<20 { ids.insert(try await alice.schedule(once: 120)) }
      let executor = try await harness.executor("exec-1", slots: 20)
      executor.grant(20)
      harness.advance(seconds: 121)
      var leased: Set<String> = []
      for _ in 0..<20 { leased.insert(try await executor.nextLease().taskID) }
      #expect(leased == ids)
      await executor.close()
    }
  }

  @Test("a result naming a time no run can have ends that executor's stream with INVALID_ARGUMENT; the coordinator serves on")
  func runTimeOutOfRange() async throws {
    try await Harness.with { harness in
      let alice = harness.client("alice")
      let id = try await alice.schedule(once: 10)
      let executor = try await harness.executor("exec-1")
      // A real task's id with the largest time: one past it would overflow.
      var bogus = Hourglass_V1_LeaseGrant()
      bogus.runID = "\(id)@\(Int64.max)"
      bogus.fence = 1
      do {
        _ = try await executor.report(bogus, outcome: .succeeded)
        Issue.record("the result was answered")
      } catch let error as RPCError {
        #expect(error.code == .invalidArgument)
      }
      #expect(try await alice.get(id).taskStatus == .scheduled)
      let other = try await harness.executor("exec-2")
      other.grant(1)
      harness.advance(seconds: 10)
      #expect(try await other.nextLease().taskID == id)
      await other.close()
    }
  }

  @Test("a result the store fails to record ends the executor's stream at its next message, so the executor sends it again")
  func resultStoreFailureEndsStream() async throws {
    try await Harness.with(observed: true) { harness in
      let store = try #require(harness.observed)
      let (alice, id, executor, lease) = try await harness.leasedOneShot()
      store.failResults(true)
      executor.send {
        $0.result = .with {
          $0.runID = lease.runID
          $0.fence = lease.fence
          $0.outcome = .succeeded
        }
      }
      // The first heartbeat after the result's failure finds it and ends the stream (one sent
      // before the failure is answered as usual). Without that, heartbeats are answered for ever.
      let ended = await bounded("the stream's end") {
        var sequence: UInt64 = 2
        while true {
          do {
            _ = try await executor.heartbeat(executorTimeMicros: harness.clock.nowMicros(), sequence: sequence)
          } catch {
            return true
          }
          sequence += 1
        }
      }
      #expect(ended == true)
      store.failResults(false)
      // Reconnected, the executor's result is recorded.
      let again = try await harness.executor("exec-1")
      #expect(try await again.report(lease, outcome: .succeeded))
      #expect(try await alice.get(id).taskStatus == .succeeded)
      await again.close()
    }
  }

  @Test("an executor stream's results in flight are bounded: at the bound the coordinator reads nothing more from it until one is answered")
  func resultsInFlightBounded() async throws {
    let capture = LogCapture()
    try await Harness.with(
      configure: { $0.resultsInFlightPerExecutor = 1 }, logger: capture.logger(level: .debug), observed: true
    ) { harness in
      let store = try #require(harness.observed)
      let alice = harness.client("alice")
      let first = try await alice.schedule(once: 1)
      let second = try await alice.schedule(once: 1)
      let executor = try await harness.executor("exec-1")
      executor.grant(2)
      harness.advance(seconds: 1)
      let leases = [try await executor.nextLease(), try await executor.nextLease()]
      #expect(Set(leases.map(\.taskID)) == [first, second])
      func result(_ lease: Hourglass_V1_LeaseGrant) -> (inout Hourglass_V1_ExecutorMessage) -> Void {
        { message in
          message.result = .with {
            $0.runID = lease.runID
            $0.fence = lease.fence
            $0.outcome = .succeeded
          }
        }
      }
      // The first result is held in the store; the second is over the bound of one, so the
      // coordinator stops reading: the heartbeat behind it is not answered either.
      store.holdResults()
      executor.send(result(leases[0]))
      await store.waitForHeldResults()
      executor.send(result(leases[1]))
      executor.send {
        $0.heartbeat = .with {
          $0.sequence = 99
          $0.executorTime = ProtoTime.timestamp(harness.clock.nowMicros())
        }
      }
      let paused = await bounded("the stream's pause") {
        await capture.first { $0.message == "executor stream paused: its results in flight are at the bound" }
      }
      #expect(paused?.metadata["hourglass.results_in_flight"] == "1")
      store.releaseResults()
      // The first answer is the held result's; the second result and the heartbeat come after.
      let answer = try await executor.next(heartbeatAcks: true)
      guard case .resultAck(let ack)? = answer.kind else {
        Issue.record("expected the first result's acknowledgement, got \(answer)")
        return
      }
      #expect(ack.runID == leases[0].runID && ack.recorded)
      var rest: [Hourglass_V1_CoordinatorMessage.OneOf_Kind] = []
      for _ in 0..<2 { if let kind = try await executor.next(heartbeatAcks: true).kind { rest.append(kind) } }
      #expect(rest.contains { if case .resultAck(let ack) = $0 { ack.runID == leases[1].runID && ack.recorded } else { false } })
      #expect(rest.contains { if case .heartbeatAck(let ack) = $0 { ack.sequence == 99 } else { false } })
      #expect(try await alice.get(first).taskStatus == .succeeded)
      #expect(try await alice.get(second).taskStatus == .succeeded)
      await executor.close()
    }
  }

  @Test("past the Schedule calls allowed to wait for the store, Schedule answers UNAVAILABLE at once and stores nothing")
  func schedulesShedWhenStoreIsBehind() async throws {
    try await Harness.with(configure: { $0.schedulesInFlight = 1 }, observed: true) { harness in
      let store = try #require(harness.observed)
      let alice = harness.client("alice")
      store.holdInserts()
      let waiting = Task { try await alice.schedule(once: 10) }
      await store.waitForHeldInsert()
      do {
        _ = try await alice.schedule(once: 10)
        Issue.record("a second Schedule was accepted while the first waited for the store")
      } catch let error as RPCError {
        #expect(error.code == .unavailable)
        #expect(error.message.contains("overloaded"))
      }
      store.releaseInserts()
      let first = try await waiting.value
      // Room again: the next one is taken.
      let second = try await alice.schedule(once: 10)
      #expect(Set(try await alice.list().map(\.taskID)) == [first, second])
    }
  }
}
