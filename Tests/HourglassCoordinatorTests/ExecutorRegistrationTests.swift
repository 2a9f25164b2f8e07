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
}
