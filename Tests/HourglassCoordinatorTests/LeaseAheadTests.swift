import HourglassProto
import Testing

@testable import HourglassCoordinator

/// Runs leased a little ahead of their due time, with the grant saying when to start them.
@Suite("Dispatcher: leasing ahead of the due time", .timeLimit(.minutes(3)))
struct LeaseAheadTests {
  @Test("a run due within the lease-ahead is leased now with the time left until it is due; one already due starts at once; a later one waits")
  func runsAreLeasedAheadWithTheirStartDelay() async throws {
    try await Harness.with(configure: { $0.leaseAheadMicros = 2_000_000 }) { harness in
      let alice = harness.client("alice")
      let now = try await alice.schedule(once: 0)
      let soon = try await alice.schedule(once: 2)
      let later = try await alice.schedule(once: 4)
      let executor = try await harness.executor("exec-1", slots: 3)
      executor.grant(3)

      // At the start: the run due now and the run due in 2 s (within the lease-ahead).
      var first: [String: Hourglass_V1_LeaseGrant] = [:]
      for _ in 0..<2 {
        let lease = try await executor.nextLease()
        first[lease.taskID] = lease
      }
      #expect(Set(first.keys) == [now, soon])
      #expect(first[now]?.hasStartAfter == false)
      #expect(first[soon]?.startAfter == .with { $0.seconds = 2 })
      // Its run history says it starts at its scheduled time, not at the lease ahead of it.
      let soonRun = try #require(try await alice.runs(soon).first)
      #expect(soonRun.started == soonRun.scheduledAt)

      // The run due in 4 s goes out when it is half the lease-ahead away (the dispatcher wakes
      // then, so that each pass leases what comes due over half of it), not before: its grant
      // waits exactly 1 s.
      harness.advance(seconds: 1)
      harness.advance(seconds: 1)
      harness.advance(seconds: 1)
      let third = try await executor.nextLease()
      #expect(third.taskID == later)
      #expect(third.startAfter == .with { $0.seconds = 1 })
      await executor.close()
    }
  }

  @Test("the lease-ahead is refused when negative or not well under the load-ahead and the lease duration")
  func leaseAheadIsValidated() throws {
    var configuration = CoordinatorConfiguration.defaults
    configuration.leaseAheadMicros = -1
    #expect(throws: ConfigurationError.self) { try configuration.validate() }
    configuration.leaseAheadMicros = configuration.leaseDurationMicros / 2
    #expect(throws: ConfigurationError.self) { try configuration.validate() }
    configuration.leaseAheadMicros = 0
    try configuration.validate()
  }
}
