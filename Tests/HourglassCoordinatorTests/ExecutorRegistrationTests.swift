import Testing

@testable import HourglassCoordinator

@Suite("Executor registration")
struct ExecutorRegistrationTests {
  /// Registered is the coordinator's word that the executor counts: a cluster coordinator joins
  /// (takes partitions) at its next pass only if it has executors, and tests and executors act
  /// on Registered at once. Sent before the dispatcher had added the stream, it let a pass run
  /// right after it find no executor (a CI failure in the cluster tests). That was a race the
  /// handler usually won, so this states the contract rather than catching every regression.
  @Test("an executor that has read Registered is already in the dispatcher's pool, and leaves it when its stream ends")
  func registeredMeansCounted() async throws {
    try await Harness.with { harness in
      var executors: [FakeExecutor] = []
      for number in 1...8 {
        executors.append(try await harness.executor("exec-\(number)"))
        #expect(await harness.coordinator.dispatcher.sessions.count == number)
      }
      for executor in executors { await executor.close() }
      // The handler removes the stream before it ends the call, so the call's end is the signal.
      #expect(await harness.coordinator.dispatcher.sessions.isEmpty)
    }
  }

  @Test("an executor whose clock is not measured yet gets no lease; its first heartbeat inside the bound makes it eligible")
  func noLeaseBeforeFirstHeartbeat() async throws {
    try await Harness.with { harness in
      let alice = harness.client("alice")
      let unmeasured = try await harness.executor("exec-unmeasured", slots: 4, heartbeat: false)
      unmeasured.grant(4)
      let first = try await alice.schedule(once: 10)
      // With more credits, the unmeasured executor would be picked first if it counted.
      let measured = try await harness.executor("exec-measured", slots: 1)
      measured.grant(1)
      harness.advance(seconds: 10)
      let lease = await bounded("the measured executor's lease") { try? await measured.nextLease() }
      #expect(lease??.taskID == first)
      #expect(await harness.coordinator.dispatcher.pool.members.values.filter { $0.skewMicros == nil }.count == 1)

      let ack = try await unmeasured.heartbeat(executorTimeMicros: harness.clock.nowMicros())
      #expect(ack.eligible)
      let second = try await alice.schedule(once: 10)
      harness.advance(seconds: 10)
      #expect(try await unmeasured.nextLease().taskID == second)
      await unmeasured.close()
      await measured.close()
    }
  }

  @Test("a CreditWithdrawal gives back the credits not yet used, and no more; Registered says it is answered")
  func withdrawal() async throws {
    try await Harness.with { harness in
      let executor = try await harness.executor("exec-1", slots: 4)
      executor.grant(3)
      executor.send { $0.withdrawal = .with { $0.credits = 2 } }
      guard case .withdrawn(let first)? = try await executor.next().kind else {
        Issue.record("expected CreditsWithdrawn")
        return
      }
      #expect(first.credits == 2)
      executor.send { $0.withdrawal = .with { $0.credits = 5 } }
      guard case .withdrawn(let second)? = try await executor.next().kind else {
        Issue.record("expected CreditsWithdrawn")
        return
      }
      #expect(second.credits == 1, "only one credit was left")
      await executor.close()
    }
  }

  @Test("a coordinator shutting down asks its executors to end their streams, and still records and answers a result sent before they do")
  func shutdownEndsExecutorStreams() async throws {
    try await Harness.with { harness in
      let (alice, id, executor, lease) = try await harness.leasedOneShot()
      harness.running.cancel()
      let message = await bounded("ShuttingDown") { try? await executor.next() }
      guard case .shuttingDown? = message??.kind else {
        Issue.record("expected ShuttingDown, got \(String(describing: message))")
        return
      }
      // The run finished meanwhile: its result, sent before the half-close, counts.
      #expect(try await executor.report(lease, outcome: .succeeded))
      await executor.close()
      #expect(try await harness.running.value == ())
      #expect(try await alice.get(id).taskStatus == .succeeded)
    }
  }
}
