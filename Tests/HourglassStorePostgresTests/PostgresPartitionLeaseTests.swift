import HourglassCore
import HourglassStore
import HourglassTestSupport
import Synchronization
import Testing

@testable import HourglassStorePostgres

/// The cluster's store operations: partition leases with epochs, the fence they put on dispatch,
/// membership, and notices between coordinators. Two stores on one database stand for two
/// coordinators.
@Suite(
  "PostgreSQL store: partition leases", .throwawayPostgres,
  .enabled(if: postgresAvailable, "PostgreSQL is not installed (set HOURGLASS_REQUIRE_POSTGRES=1 to fail instead)"))
struct PostgresPartitionLeaseTests {
  static func pair() async throws -> (PostgresTaskStore, PostgresTaskStore) {
    let a = try await openTestStore(partitionCount: 4)
    let b = try await openTestStore(partitionCount: 4, database: a.configuration.database)
    return (a, b)
  }

  /// A due one-shot task in a partition of its own choosing.
  static func dueTask(_ store: PostgresTaskStore, in wanted: Partition? = nil, notIn partitions: Set<Partition> = []) async throws -> (TaskID, Partition) {
    func fits(_ id: TaskID) -> Bool {
      let partition = Partition(taskID: id, count: store.partitionCount)
      return !partitions.contains(partition) && (wanted == nil || wanted == partition)
    }
    var id = TaskID.now()
    while !fits(id) { id = TaskID.now() }
    try await store.insert([NewTask(id: id, owner: "alice", operatorName: "noop", maxAttempts: 3, firstRunMicros: 1_000, createdAtMicros: 0)])
    return (id, Partition(taskID: id, count: store.partitionCount))
  }

  @Test func leasesMoveOnlyWhenFreeOrRunOutAndTheEpochGrowsWithEachNewOwner() async throws {
    let (a, b) = try await Self.pair()
    let p0 = Partition(rawValue: 0)
    let p1 = Partition(rawValue: 1)
    let taken = try await a.acquirePartitions([p0, p1], owner: "a", incarnation: 1, now: 1_000, expiresAt: 11_000)
    #expect(taken == [.init(partition: p0, owner: "a", epoch: 1, expiresMicros: 11_000), .init(partition: p1, owner: "a", epoch: 1, expiresMicros: 11_000)])
    #expect(try await b.acquirePartitions([p0, p1], owner: "b", incarnation: 1, now: 2_000, expiresAt: 12_000).isEmpty, "a live lease is not taken")
    let renewed = try await a.acquirePartitions([p0, p1], owner: "a", incarnation: 1, now: 5_000, expiresAt: 15_000)
    #expect(renewed.map(\.epoch) == [1, 1], "renewing keeps the epoch")
    #expect(renewed.map(\.expiresMicros) == [15_000, 15_000])
    // a was paused past its leases: b takes p0, and the epoch grows.
    #expect(
      try await b.acquirePartitions([p0], owner: "b", incarnation: 1, now: 16_000, expiresAt: 26_000) == [
        .init(partition: p0, owner: "b", epoch: 2, expiresMicros: 26_000)
      ])
    // a comes back: p0 is b's now; p1 ran out but nobody took it, so a keeps it with its epoch.
    #expect(
      try await a.acquirePartitions([p0, p1], owner: "a", incarnation: 1, now: 17_000, expiresAt: 27_000) == [
        .init(partition: p1, owner: "a", epoch: 1, expiresMicros: 27_000)
      ]
    )
    // A release frees a partition at once.
    try await a.releasePartitions([p1], owner: "a", incarnation: 1)
    #expect(try await b.acquirePartitions([p1], owner: "b", incarnation: 1, now: 18_000, expiresAt: 28_000).map(\.epoch) == [2])
    #expect(try await a.partitionLeases().map(\.owner) == ["b", "b"])
    try await a.close()
    try await b.close()
  }

  @Test func aFormerOwnerCannotLeaseARunOfThePartitionItLost() async throws {
    let (a, b) = try await Self.pair()
    let (task, partition) = try await Self.dueTask(a)
    let first = try #require(try await a.acquirePartitions([partition], owner: "a", incarnation: 1, now: 1_000, expiresAt: 11_000).first)
    // a is paused; its lease runs out and b takes the partition over.
    let second = try #require(try await b.acquirePartitions([partition], owner: "b", incarnation: 1, now: 20_000, expiresAt: 30_000).first)
    #expect(second.epoch == first.epoch + 1)
    let request = LeaseRequest(taskID: task, scheduledMicros: 1_000, owner: "exec-1", expiresAt: 60_000)
    // Even by its own (stale) clock, a's epoch is gone.
    let refused = try await a.createLeases([request], now: 5_000, fencedBy: PartitionFence(owner: "a", epochs: [partition: first.epoch]))
    #expect(refused == FencedLeases(leases: [nil], unheld: [partition]))
    // b with an epoch it does not hold is refused too; with its own it leases.
    #expect(try await b.createLeases([request], now: 21_000, fencedBy: PartitionFence(owner: "b", epochs: [partition: first.epoch])).leases == [nil])
    let granted = try await b.createLeases([request], now: 21_000, fencedBy: PartitionFence(owner: "b", epochs: [partition: second.epoch]))
    #expect(granted.leases.first??.runID == RunID(taskID: task, scheduledMicros: 1_000))
    #expect(granted.unheld.isEmpty)
    // Past its partition lease, b's own epoch no longer leases either.
    let (other, _) = try await Self.dueTask(a, in: partition)
    let late = LeaseRequest(taskID: other, scheduledMicros: 1_000, owner: "exec-1", expiresAt: 90_000)
    #expect(try await b.createLeases([late], now: 30_000, fencedBy: PartitionFence(owner: "b", epochs: [partition: second.epoch])).unheld == [partition])
    try await a.close()
    try await b.close()
  }

  @Test func recoveryTakesOnlyTheGivenPartitionsRuns() async throws {
    let (a, b) = try await Self.pair()
    let (mine, myPartition) = try await Self.dueTask(a)
    let (theirs, _) = try await Self.dueTask(a, notIn: [myPartition])
    let leases = try await a.createLeases(
      [mine, theirs].map { LeaseRequest(taskID: $0, scheduledMicros: 1_000, owner: "exec-1", expiresAt: 2_000) }, now: 1_500)
    #expect(leases.allSatisfy { $0 != nil })
    let recovered = try await a.recoverExpiredLeases(now: 10_000, skewBound: 500, limit: 100, partitions: [myPartition])
    #expect(recovered.map(\.id.taskID) == [mine])
    #expect(try await b.recoverExpiredLeases(now: 10_000, skewBound: 500, limit: 100, partitions: []).isEmpty)
    #expect(try await b.recoverExpiredLeases(now: 10_000, skewBound: 500, limit: 100).map(\.id.taskID) == [theirs])
    try await a.close()
    try await b.close()
  }

  @Test func incarnationsOnlyGrow() async throws {
    let (a, b) = try await Self.pair()
    let first = try await a.newIncarnation()
    let second = try await b.newIncarnation()
    let third = try await a.newIncarnation()
    #expect(first < second && second < third)
    try await a.close()
    try await b.close()
  }

  @Test func aCoordinatorRestartedUnderItsIdFencesItsFormerProcessWhichCannotTakeOrReleaseItsPartitions() async throws {
    // Two stores stand for two processes of coordinator "a": started at 100 and at 200.
    let (former, later) = try await Self.pair()
    let (task, partition) = try await Self.dueTask(former)
    let first = try #require(try await former.acquirePartitions([partition], owner: "a", incarnation: 100, now: 1_000, expiresAt: 11_000).first)
    // Restarted while the former process still runs (paused): the partition comes back at once,
    // with a new epoch.
    let second = try #require(try await later.acquirePartitions([partition], owner: "a", incarnation: 200, now: 2_000, expiresAt: 12_000).first)
    #expect(second.epoch == first.epoch + 1)
    let request = LeaseRequest(taskID: task, scheduledMicros: 1_000, owner: "exec-1", expiresAt: 60_000)
    let refused = try await former.createLeases([request], now: 3_000, fencedBy: PartitionFence(owner: "a", epochs: [partition: first.epoch]))
    #expect(refused == FencedLeases(leases: [nil], unheld: [partition]), "the former process's epoch no longer leases")
    // The former process wakes: it cannot take the partition back, and its release or leave
    // frees nothing of the later one's.
    #expect(try await former.acquirePartitions([partition], owner: "a", incarnation: 100, now: 3_000, expiresAt: 13_000).isEmpty)
    try await former.releasePartitions([partition], owner: "a", incarnation: 100)
    // Nor is its membership row written over or removed.
    _ = try await later.heartbeatCoordinator(CoordinatorMember(id: "a", address: "later:1", incarnation: 200), now: 2_000, expiresAt: 12_000)
    let seen = try await former.heartbeatCoordinator(CoordinatorMember(id: "a", address: "former:1", incarnation: 100), now: 3_000, expiresAt: 13_000)
    #expect(seen == [CoordinatorMember(id: "a", address: "later:1", incarnation: 200)], "the former process sees the later one")
    try await former.leaveCluster("a", incarnation: 100)
    #expect(try await later.heartbeatCoordinator(CoordinatorMember(id: "b"), now: 3_000, expiresAt: 13_000).map(\.id) == ["a", "b"])
    #expect(try await later.partitionLeases() == [.init(partition: partition, owner: "a", epoch: second.epoch, expiresMicros: 12_000)])
    // The later process renews with its epoch and leases under it.
    #expect(try await later.acquirePartitions([partition], owner: "a", incarnation: 200, now: 4_000, expiresAt: 14_000).map(\.epoch) == [second.epoch])
    let granted = try await later.createLeases([request], now: 4_000, fencedBy: PartitionFence(owner: "a", epochs: [partition: second.epoch]))
    #expect(granted.leases.first??.runID == RunID(taskID: task, scheduledMicros: 1_000))
    // Once the later process's lease has run out (it died), any process may take it, the epoch growing.
    #expect(try await former.acquirePartitions([partition], owner: "a", incarnation: 100, now: 14_000, expiresAt: 24_000).map(\.epoch) == [second.epoch + 1])
    try await former.close()
    try await later.close()
  }

  @Test func membershipListsTheLiveCoordinatorsAndLeavingFreesPartitions() async throws {
    let (a, b) = try await Self.pair()
    func ids(_ members: [CoordinatorMember]) -> [String] { members.map(\.id) }
    #expect(ids(try await a.heartbeatCoordinator(CoordinatorMember(id: "a"), now: 1_000, expiresAt: 11_000)) == ["a"])
    #expect(ids(try await b.heartbeatCoordinator(CoordinatorMember(id: "b", incarnation: 1), now: 2_000, expiresAt: 12_000)) == ["a", "b"])
    #expect(
      ids(try await b.heartbeatCoordinator(CoordinatorMember(id: "b", incarnation: 1), now: 11_500, expiresAt: 21_500)) == ["b"], "a's heartbeat ran out")
    _ = try await b.acquirePartitions([Partition(rawValue: 3)], owner: "b", incarnation: 1, now: 11_500, expiresAt: 21_500)
    try await b.leaveCluster("b", incarnation: 1)
    #expect(ids(try await a.heartbeatCoordinator(CoordinatorMember(id: "a"), now: 12_000, expiresAt: 22_000)) == ["a"])
    #expect(try await a.acquirePartitions([Partition(rawValue: 3)], owner: "a", incarnation: 1, now: 12_000, expiresAt: 22_000).map(\.epoch) == [2])
    try await a.close()
    try await b.close()
  }

  @Test func membersCarryTheirAddressAndWhetherTheyDispatchAndEachHeartbeatUpdatesBoth() async throws {
    let (a, b) = try await Self.pair()
    let waiting = CoordinatorMember(id: "b", address: "10.0.0.2:7443", dispatching: false)
    _ = try await b.heartbeatCoordinator(waiting, now: 1_000, expiresAt: 11_000)
    let seen = try await a.heartbeatCoordinator(CoordinatorMember(id: "a"), now: 1_000, expiresAt: 11_000)
    #expect(seen == [CoordinatorMember(id: "a", address: nil, dispatching: true), waiting])
    // Its first executor arrived, and it moved.
    let dispatching = CoordinatorMember(id: "b", address: "10.0.0.3:7443", dispatching: true)
    _ = try await b.heartbeatCoordinator(dispatching, now: 2_000, expiresAt: 12_000)
    #expect(try await a.heartbeatCoordinator(CoordinatorMember(id: "a"), now: 2_000, expiresAt: 12_000).last == dispatching)
    try await a.close()
    try await b.close()
  }

  @Test func noticesReachTheOtherCoordinators() async throws {
    let (a, b) = try await Self.pair()
    let (listening, listeningContinuation) = AsyncStream<Void>.makeStream()
    let (received, receivedContinuation) = AsyncStream<[ClusterNotice]>.makeStream()
    let listener = Task {
      try await a.listen(onListening: { listeningContinuation.yield() }, { receivedContinuation.yield($0) })
    }
    var listeningIterator = listening.makeAsyncIterator()
    _ = await listeningIterator.next()
    let entry = DueEntry(taskID: TaskID.now(), scheduledMicros: 5_000, dueMicros: 5_000, priority: 3)
    let notices: [ClusterNotice] = [.due(entry), .cancel(RunID(taskID: entry.taskID, scheduledMicros: 1_000), reason: "the task was deleted")]
    try await b.publish(notices)
    var receivedIterator = received.makeAsyncIterator()
    #expect(await receivedIterator.next() == notices)
    listener.cancel()
    _ = await listener.result
    try await a.close()
    try await b.close()
  }
}
