import CoreMetrics
import Foundation
import HourglassCore
import HourglassExecutor
import HourglassObservability
import HourglassPostgresLauncher
import HourglassProto
import HourglassRPC
import HourglassStore
import HourglassStorePostgres
import HourglassTestSupport
import Logging
import Prometheus
import Testing

@testable import HourglassCoordinator
@testable import HourglassStorePostgres

#if canImport(Glibc)
  import Glibc
#endif

@Suite("Cluster: partition assignment")
struct PartitionAssignmentTests {
  static let members = ["coord-a", "coord-b", "coord-c"]

  @Test func everyPartitionHasExactlyOnePreferredOwnerWhateverTheOrderOfTheMembers() {
    for number in Int32(0)..<64 {
      let partition = Partition(rawValue: number)
      let owner = PartitionAssignment.preferredOwner(of: partition, among: Self.members)
      #expect(owner != nil)
      #expect(PartitionAssignment.preferredOwner(of: partition, among: Self.members.reversed()) == owner)
    }
  }

  @Test func eachCoordinatorPlansToTakeItsOwnShareAndReleaseTheRest() {
    var taken: [Partition: String] = [:]
    for me in Self.members {
      let plan = PartitionAssignment(me: me, members: Self.members, held: Set((0..<64).map { Partition(rawValue: $0) }), partitionCount: 64)
      for partition in plan.acquire {
        #expect(taken[partition] == nil, "\(partition) planned twice")
        taken[partition] = me
      }
      #expect(Set(plan.acquire).isDisjoint(with: plan.release))
      #expect(plan.acquire.count + plan.release.count == 64, "everything held is either kept or released")
    }
    #expect(taken.count == 64, "every partition is someone's")
    // Rendezvous hashing spreads evenly in expectation: no one gets nothing or almost everything.
    for member in Self.members {
      let share = taken.values.filter { $0 == member }.count
      #expect(share >= 10 && share <= 35, "\(member): \(share) of 64")
    }
  }

  @Test func aJoiningCoordinatorTakesPartitionsOnlyFromTheOthersNeverMovingTheRestBetweenThem() {
    let before = Dictionary(
      uniqueKeysWithValues: (Int32(0)..<64).map { ($0, PartitionAssignment.preferredOwner(of: Partition(rawValue: $0), among: Self.members)!) })
    let after = Dictionary(
      uniqueKeysWithValues: (Int32(0)..<64).map { ($0, PartitionAssignment.preferredOwner(of: Partition(rawValue: $0), among: Self.members + ["coord-d"])!) })
    for number in Int32(0)..<64 where after[number] != before[number] {
      #expect(after[number] == "coord-d", "p\(number) moved from \(before[number]!) to \(after[number]!)")
    }
    #expect(after.values.contains("coord-d"))
  }

  @Test func aCoordinatorAloneTakesEverythingAndCountsItselfLiveBeforeItsFirstHeartbeatIsSeen() {
    let plan = PartitionAssignment(me: "coord-a", members: [], held: [], partitionCount: 8)
    #expect(plan.acquire == (0..<8).map { Partition(rawValue: $0) })
    #expect(plan.release.isEmpty)
  }

  @Test func noticesSurviveTheirTextEncodingAndSplitIntoBoundedPayloads() {
    let entries = (0..<300).map {
      DueEntry(taskID: TaskID.now(), scheduledMicros: 1_000 + Int64($0), dueMicros: 2_000 + Int64($0), priority: Int32($0 % 7) - 3)
    }
    let notices: [ClusterNotice] =
      entries.map { .due($0) } + [
        .rebalance(from: "coord a"), .ping(from: "coord b"), .cancel(RunID(taskID: entries[0].taskID, scheduledMicros: 1_000), reason: "deleted\nby alice"),
      ]
    let payloads = ClusterNotice.encode(notices)
    #expect(payloads.count > 1)
    #expect(payloads.allSatisfy { $0.utf8.count <= ClusterNotice.maxPayloadBytes })
    let decoded = payloads.flatMap { ClusterNotice.decode($0) }
    #expect(decoded.dropLast() == notices.dropLast())
    #expect(decoded.last == .cancel(RunID(taskID: entries[0].taskID, scheduledMicros: 1_000), reason: "deleted by alice"))
    #expect(ClusterNotice.decode("x something new\nd not-a-uuid 1 2 3\n") == [], "unknown and malformed lines are skipped")
  }
}

/// Coordinators sharing one PostgreSQL database (of the suite's server, or of a server of the
/// test's own), on one manual clock, reached through the in-process transport.
struct ClusterHarness {
  let coordinators: [Coordinator]
  let stores: [PostgresTaskStore]
  let clock: ManualClock
  let running: [Task<Void, any Error>]
  let ids: [String]
  let server: ThrowawayPostgres

  /// Runs `body` with coordinators `ids` on a database of their own. The suite's server
  /// (``PostgresTestServer/current``) holds it unless `ownServer` (a test that stops the server)
  /// or no suite provides one: each server costs an `initdb` and a start, which eleven tests
  /// started together made last most of their time limit on a loaded machine.
  static func with<T: Sendable>(
    ids: [String], ownServer: Bool = false, metricsFactories: [any MetricsFactory]? = nil,
    configure: (inout CoordinatorConfiguration) -> Void = { _ in }, _ body: (ClusterHarness) async throws -> T
  ) async throws -> T {
    if !ownServer, let shared = PostgresTestServer.current {
      return try await run(ids: ids, metricsFactories: metricsFactories, configure: configure, on: shared, body)
    }
    let server = try await ThrowawayPostgres.start()
    do {
      let result = try await run(ids: ids, metricsFactories: metricsFactories, configure: configure, on: server, body)
      _ = await bounded("the PostgreSQL server stopping") { await server.stop() }
      return result
    } catch {
      _ = await bounded("the PostgreSQL server stopping") { await server.stop() }
      throw error
    }
  }

  private static func run<T: Sendable>(
    ids: [String], metricsFactories: [any MetricsFactory]?, configure: (inout CoordinatorConfiguration) -> Void, on server: ThrowawayPostgres,
    _ body: (ClusterHarness) async throws -> T
  ) async throws -> T {
    let database = try await server.createDatabase()
    var logger = Logger(label: "test.cluster")
    logger.logLevel = .warning
    let clock = ManualClock(nowMicros: Harness.start)
    var stores: [PostgresTaskStore] = []
    var coordinators: [Coordinator] = []
    for (index, id) in ids.enumerated() {
      var storeConfiguration = PostgresTaskStore.Configuration.defaults(host: server.host, port: server.port, username: server.username, database: database)
      storeConfiguration.partitionCount = 4
      storeConfiguration.maxConnections = 8
      storeConfiguration.writerConnections = 2
      stores.append(try await PostgresTaskStore(configuration: storeConfiguration, logger: logger))
      var configuration = CoordinatorConfiguration.defaults
      configuration.coordinatorID = id
      // The manual clock stands days apart from the database's: tests of the check turn it on.
      configuration.clusterClockBoundMicros = nil
      configure(&configuration)
      coordinators.append(
        try Coordinator(
          configuration: configuration, store: stores.last!, tls: nil, clock: clock, logger: logger,
          metricsFactory: metricsFactories?[index] ?? NOOPMetricsHandler.instance))
    }
    let running = coordinators.map { coordinator in Task { try await coordinator.run() } }
    let harness = ClusterHarness(coordinators: coordinators, stores: stores, clock: clock, running: running, ids: ids, server: server)
    do {
      let result = try await body(harness)
      await stop(running, stores)
      return result
    } catch {
      await stop(running, stores)
      throw error
    }
  }

  /// Stops the coordinators, then closes the stores, each wait bounded (``bounded(_:seconds:sourceLocation:_:)``).
  private static func stop(_ running: [Task<Void, any Error>], _ stores: [PostgresTaskStore]) async {
    for task in running { task.cancel() }
    for task in running { _ = await bounded("a coordinator stopping") { _ = await task.result } }
    for store in stores { _ = await bounded("a store closing") { try? await store.close() } }
  }

  /// Shuts coordinator `index` down as a graceful shutdown does (its dispatching is cancelled).
  func stop(_ index: Int) async {
    running[index].cancel()
    _ = await running[index].result
  }

  func client(_ user: String, via index: Int) -> UserClient {
    UserClient(
      rpc: RPCClient(transport: InProcessTransport(server: coordinators[index].server, peer: PeerIdentity(name: user, role: "user"))), user: user)
  }

  func executor(_ name: String, via index: Int) async throws -> FakeExecutor {
    try await FakeExecutor.connect(
      RPCClient(transport: InProcessTransport(server: coordinators[index].server, peer: PeerIdentity(name: name, role: "executor"))),
      name: name, operators: ["exec", "noop"], slots: 4, clock: { [clock] in clock.nowMicros() })
  }

  /// Runs ownership passes on every coordinator (a few rounds: a release must precede the
  /// other's take), then checks that each of `members` (default: all) holds exactly what
  /// rendezvous hashing gives it among them, and every other coordinator nothing.
  func converge(members: [Int]? = nil) async throws {
    let members = members ?? Array(coordinators.indices)
    for _ in 0..<3 {
      for coordinator in coordinators { await coordinator.dispatcher.keepPartitionsPass() }
    }
    let memberIDs = members.map { ids[$0] }
    for index in coordinators.indices {
      let me = ids[index]
      let expected = (Int32(0)..<4).filter { PartitionAssignment.preferredOwner(of: Partition(rawValue: $0), among: memberIDs) == me }
      let actual = await owned(index)
      try #require(actual == expected, "\(me) should own \(expected) among \(memberIDs), owns \(actual)")
    }
    // A notice sent before its receiver subscribes is lost (the sweep finds the run later):
    // tests counting notices need every coordinator listening.
    for (index, coordinator) in coordinators.enumerated() {
      _ = await bounded("\(ids[index]) listening for notices") { await coordinator.dispatcher.waitUntilListening() }
    }
  }

  func owned(_ index: Int) async -> [Int32] {
    await coordinators[index].dispatcher.ownedPartitions.map(\.rawValue)
  }

  /// Schedules one-shot tasks through coordinator `index` until one lands in a partition that
  /// coordinator `owner` owns; returns its id.
  func schedule(via index: Int, landingOn owner: Int, inSeconds offset: Int64) async throws -> String {
    let owned = Set(await self.owned(owner))
    let client = client("alice", via: index)
    for _ in 0..<64 {
      let id = try await client.schedule(once: offset)
      let taskID = try #require(TaskID(id))
      if owned.contains(Partition(taskID: taskID, count: 4).rawValue) { return id }
      _ = try await client.delete(id)
    }
    throw RPCError(code: .internal, message: "no task landed on coordinator \(owner)'s partitions")
  }
}

@Suite(
  "Cluster: coordinators sharing PostgreSQL", .timeLimit(.minutes(3)),
  // Eleven tests at once, two stores of up to 8 connections each.
  .throwawayPostgres(maxConnections: 400),
  .enabled(if: postgresAvailable, "PostgreSQL is not installed (set HOURGLASS_REQUIRE_POSTGRES=1 to fail instead)"))
struct ClusterTests {
  static let ids = ["coord-a", "coord-b"]

  /// Two coordinators, each with one executor (`exec-a` on A, `exec-b` on B), their partitions
  /// split between them.
  static func withSplitCluster(_ body: (ClusterHarness, FakeExecutor, FakeExecutor) async throws -> Void) async throws {
    try await ClusterHarness.with(ids: ids) { cluster in
      let onA = try await cluster.executor("exec-a", via: 0)
      let onB = try await cluster.executor("exec-b", via: 1)
      try await cluster.converge()
      try await body(cluster, onA, onB)
      await onA.close()
      await onB.close()
    }
  }

  @Test("the partitions are split, and a run scheduled through either coordinator goes out from its partition's owner")
  func partitionsSplitAndNoticesCarryRunsToTheirOwner() async throws {
    try await Self.withSplitCluster { cluster, onA, onB in
      #expect(await cluster.owned(0).count + cluster.owned(1).count == 4)
      onA.grant(4)
      onB.grant(4)
      // Scheduled through B, due in A's partition inside A's loaded window: B announces it.
      let forA = try await cluster.schedule(via: 1, landingOn: 0, inSeconds: 1)
      let forB = try await cluster.schedule(via: 0, landingOn: 1, inSeconds: 1)
      cluster.clock.advance(byMicros: 1_000_000)
      let leaseA = try await onA.nextLease()
      let leaseB = try await onB.nextLease()
      #expect(leaseA.taskID == forA)
      #expect(leaseB.taskID == forB)
      #expect(try await onA.report(leaseA, outcome: .succeeded))
      #expect(try await onB.report(leaseB, outcome: .succeeded))
      // Either coordinator answers for either task.
      let viaB = try await cluster.client("alice", via: 1).get(forA)
      #expect(viaB.taskStatus == .succeeded)
    }
  }

  @Test("a coordinator that leaves hands its partitions over, and their runs go out from the other")
  func leavingHandsPartitionsOver() async throws {
    try await Self.withSplitCluster { cluster, onA, onB in
      let id = try await cluster.schedule(via: 0, landingOn: 0, inSeconds: 10)
      onB.grant(1)
      // A shuts down gracefully: it gives its partitions up and leaves the membership.
      await cluster.stop(0)
      await cluster.coordinators[1].dispatcher.keepPartitionsPass()
      #expect(await cluster.owned(1) == [0, 1, 2, 3])
      cluster.clock.advance(byMicros: 10_000_000)
      let lease = try await onB.nextLease()
      #expect(lease.taskID == id)
    }
  }

  @Test("a coordinator shuts down with its database gone: leaving the cluster gives up after 2 s")
  func shutdownWithoutTheDatabase() async throws {
    try await ClusterHarness.with(ids: ["coord-a"], ownServer: true) { cluster in
      let onA = try await cluster.executor("exec-a", via: 0)
      try await cluster.converge()
      await cluster.server.stop(immediately: true, removingDirectory: false)
      let giveUp = cluster.clock.nowMicros() + Dispatcher.leaveTimeoutMicros
      // Watch for the leave's time limit before the shutdown starts it.
      let sleeping = cluster.clock.expectSleeper(until: giveUp)
      cluster.running[0].cancel()
      // Each wait bounded: this test hung a whole run once, under load, and only a bounded
      // wait can say which step did not finish.
      _ = await bounded("the leave's time limit starting") {
        var iterator = sleeping.makeAsyncIterator()
        return await iterator.next() != nil
      }
      cluster.clock.advance(byMicros: Dispatcher.leaveTimeoutMicros)
      let coordinator = cluster.running[0]
      _ = await bounded("the coordinator stopping") { _ = await coordinator.result }
      _ = await bounded("the executor's stream closing") { await onA.close() }
    }
  }

  @Test("a notice subscription gone silent is replaced once its pings stop coming back, and notices arrive again")
  func silentNoticeSubscriptionIsReplaced() async throws {
    let registry = PrometheusCollectorRegistry()
    try await ClusterHarness.with(
      // A server of its own: the test stops one of its processes.
      ids: ["coord-a"], ownServer: true, metricsFactories: [HourglassMetrics.makeFactory(registry: registry)],
      configure: {
        // Passes only when the test makes them: the loop's own come a third of an hour apart.
        $0.partitionLeaseMicros = 3_600_000_000
        $0.noticeSilenceMicros = 10_000_000
      }
    ) { cluster in
      let onA = try await cluster.executor("exec-a", via: 0)
      try await cluster.converge()
      let dispatcher = cluster.coordinators[0].dispatcher
      // While the subscription works, each pass's ping comes back, however far apart the passes.
      // (Each time only once the pings sent so far are back: the manual clock would otherwise
      // jump past a round trip that takes real time.)
      for _ in 0..<3 {
        _ = await bounded("the pings coming back") { await dispatcher.waitUntilPingsAnswered() }
        cluster.clock.advance(byMicros: 10_000_000)
        await dispatcher.keepPartitionsPass()
      }
      _ = await bounded("the pings coming back") { await dispatcher.waitUntilPingsAnswered() }
      #expect(await dispatcher.noticeSubscriptions == 1)
      #expect(await dispatcher.noticeGeneration == 1)

      // The LISTEN connection's server process stopped: its socket stays open and nothing
      // arrives, as with a database host gone or a connection a NAT forgot. No error comes.
      let listeners = try await cluster.stores[0].rows(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%'"
      ).map { try $0.decode(Int32.self) }
      let pid = try #require(listeners.count == 1 ? listeners.first : nil, "one LISTEN connection, found \(listeners)")
      #expect(kill(pid_t(pid), SIGSTOP) == 0)
      defer { kill(pid_t(pid), SIGCONT) }
      await dispatcher.keepPartitionsPass()
      cluster.clock.advance(byMicros: 10_000_000)
      await dispatcher.keepPartitionsPass()
      #expect(await dispatcher.noticeGeneration == 1, "one ping unanswered is not yet silence")
      cluster.clock.advance(byMicros: 10_000_000)
      await dispatcher.keepPartitionsPass()
      _ = await bounded("a new subscription listening") { await dispatcher.waitUntilListening(times: 2) }

      // Notices arrive through the new connection, the old one still silent.
      try await cluster.stores[0].publish([.due(DueEntry(taskID: TaskID.now(), scheduledMicros: 1, dueMicros: 1, priority: 0))])
      _ = await bounded("a notice through the new subscription") { await dispatcher.waitUntilReceived(dueNotices: 1) }
      let metrics = try PrometheusText(registry.emitToString())
      #expect(metrics.value("hourglass_cluster_notice_resubscriptions_total") == 1)
      await onA.close()
    }
  }

  @Test("a coordinator whose clock is off the database's beyond the bound dispatches nothing until it is back within")
  func clockOffTheDatabase() async throws {
    let registry = PrometheusCollectorRegistry()
    try await ClusterHarness.with(
      ids: ["coord-a"], metricsFactories: [HourglassMetrics.makeFactory(registry: registry)],
      configure: {
        // Wide, for a loaded machine: the manual clock stands still while the database's runs.
        $0.clusterClockBoundMicros = 60_000_000
        $0.skewBoundMicros = 120_000_000
      }
    ) { cluster in
      let onA = try await cluster.executor("exec-a", via: 0)
      let dispatcher = cluster.coordinators[0].dispatcher
      let store = cluster.stores[0]
      // The manual clock starts on 2026-12-01, behind the database's by more than the bound.
      await dispatcher.keepPartitionsPass()
      #expect(await cluster.owned(0).isEmpty)
      #expect(try await store.partitionLeases().allSatisfy { $0.expiresMicros == 0 || $0.owner != "coord-a" })
      let behind = try PrometheusText(registry.emitToString()).value("hourglass_cluster_clock_offset_seconds")
      #expect((behind ?? 0) < -60, "offset \(String(describing: behind)) s")
      // Set to the database's time: within the bound, it takes every partition.
      cluster.clock.advance(byMicros: try await store.databaseClockMicros() - cluster.clock.nowMicros())
      await dispatcher.keepPartitionsPass()
      #expect(await cluster.owned(0) == [0, 1, 2, 3])
      // A run goes out meanwhile.
      onA.grant(1)
      _ = try await cluster.schedule(via: 0, landingOn: 0, inSeconds: (cluster.clock.nowMicros() - Harness.start) / 1_000_000 + 1)
      cluster.clock.advance(byMicros: 1_000_000)
      let lease = try await onA.nextLease()
      // Two minutes ahead: it gives them all up and leaves the dispatching members.
      cluster.clock.advance(byMicros: 120_000_000)
      await dispatcher.keepPartitionsPass()
      #expect(await cluster.owned(0).isEmpty)
      #expect(try await store.partitionLeases().allSatisfy { $0.expiresMicros == 0 })
      #expect(
        try await store.heartbeatCoordinator(CoordinatorMember(id: "probe"), now: cluster.clock.nowMicros(), expiresAt: cluster.clock.nowMicros() + 1).map(\.id)
          == ["probe"])
      // The run's renewal is still answered, its expiry written by the database's time (30 s
      // on), not by this clock's two minutes ahead, which another coordinator would take as late.
      #expect(try await onA.renew(lease).renewed)
      let expiry = try #require(try await store.rows("SELECT lease_expires_us FROM runs WHERE state = 'leased'").first?.decode(Int64.self))
      let expected = try await store.databaseClockMicros() + CoordinatorConfiguration.defaults.leaseDurationMicros
      #expect(abs(expiry - expected) < 60_000_000, "expiry \(expiry), expected about \(expected)")
      await onA.close()
    }
  }

  @Test("a coordinator that finds a later process of its own id in the membership stands down for good")
  func laterProcessOfTheSameIDTakesOver() async throws {
    try await ClusterHarness.with(ids: ["coord-a"]) { cluster in
      let onA = try await cluster.executor("exec-a", via: 0)
      try await cluster.converge()
      let dispatcher = cluster.coordinators[0].dispatcher
      let mine = try #require(await dispatcher.incarnation)
      // A second process of coord-a starts (the first was paused): a later incarnation takes the
      // membership row and every partition, with new epochs.
      let store = cluster.stores[0]
      let later = try await store.newIncarnation()
      #expect(later > mine)
      let now = cluster.clock.nowMicros()
      _ = try await store.heartbeatCoordinator(CoordinatorMember(id: "coord-a", incarnation: later), now: now, expiresAt: now + 10_000_000)
      let all = (Int32(0)..<4).map { Partition(rawValue: $0) }
      #expect(try await store.acquirePartitions(all, owner: "coord-a", incarnation: later, now: now, expiresAt: now + 10_000_000).count == 4)
      // The first process wakes: it sees the later one and dispatches nothing more.
      await dispatcher.keepPartitionsPass()
      #expect(await cluster.owned(0).isEmpty)
      cluster.clock.advance(byMicros: 20_000_000)
      await dispatcher.keepPartitionsPass()
      #expect(await cluster.owned(0).isEmpty, "not even once the later one's leases ran out")
      #expect(await dispatcher.superseded)
      await onA.close()
    }
  }

  @Test("the membership and the notices are counted")
  func clusterMetrics() async throws {
    let registries = [PrometheusCollectorRegistry(), PrometheusCollectorRegistry()]
    try await ClusterHarness.with(ids: Self.ids, metricsFactories: registries.map { HourglassMetrics.makeFactory(registry: $0) }) { cluster in
      let onA = try await cluster.executor("exec-a", via: 0)
      let onB = try await cluster.executor("exec-b", via: 1)
      try await cluster.converge()
      onA.grant(1)
      let forA = try await cluster.schedule(via: 1, landingOn: 0, inSeconds: 1)
      cluster.clock.advance(byMicros: 1_000_000)
      #expect(try await onA.nextLease().taskID == forA)
      // A's own loads may lease the run before B's notice arrives.
      let coordinatorA = cluster.coordinators[0]
      _ = await bounded("B's notice reaching A") { await coordinatorA.dispatcher.waitUntilReceived(dueNotices: 1) }
      let a = try PrometheusText(registries[0].emitToString())
      let b = try PrometheusText(registries[1].emitToString())
      #expect(a.value("hourglass_cluster_coordinators") == 2)
      #expect(b.value("hourglass_cluster_coordinators") == 2)
      #expect((b.value("hourglass_cluster_notices_total", ["direction": "sent", "kind": "due"]) ?? 0) >= 1)
      #expect((a.value("hourglass_cluster_notices_total", ["direction": "received", "kind": "due"]) ?? 0) >= 1)
      #expect(a.value("hourglass_shard_owner", ["partition": "\(await cluster.owned(0)[0])", "owner": "coord-a"]) == 1)
      await onA.close()
      await onB.close()
    }
  }

  @Test("the coordinators announced to executors are counted: those with an address, whether or not they dispatch")
  func announcedCoordinatorsMetric() async throws {
    let registries = [PrometheusCollectorRegistry(), PrometheusCollectorRegistry()]
    try await ClusterHarness.with(
      ids: Self.ids, metricsFactories: registries.map { HourglassMetrics.makeFactory(registry: $0) },
      configure: { if $0.coordinatorID == "coord-b" { $0.advertiseAddress = "coord-b.test:7443" } }
    ) { cluster in
      // B has no executor: it does not dispatch, but its row is there to be announced.
      let onA = try await cluster.executor("exec-a", via: 0)
      try await cluster.converge(members: [0])
      let a = try PrometheusText(registries[0].emitToString())
      let b = try PrometheusText(registries[1].emitToString())
      #expect(a.value("hourglass_cluster_announced_coordinators") == 1)
      #expect(b.value("hourglass_cluster_announced_coordinators") == 1)
      #expect(a.value("hourglass_cluster_coordinators") == 1, "only A dispatches")
      #expect(await cluster.coordinators[0].dispatcher.clusterPeers?.map(\.id) == ["coord-b"])
      await onA.close()
    }
  }

  @Test("a leaving coordinator asks the others to pass at once (a rebalance notice), and they take its partitions")
  func leavingAnnouncesARebalance() async throws {
    try await Self.withSplitCluster { cluster, _, _ in
      let (listening, listeningContinuation) = AsyncStream<Void>.makeStream()
      let (rebalances, rebalanceContinuation) = AsyncStream<String>.makeStream()
      let listener = Task {
        try await cluster.stores[1].listen(onListening: { listeningContinuation.yield() }) { notices in
          // Only A's: B's own passes may announce one too.
          for case .rebalance(let sender) in notices where sender == "coord-a" { rebalanceContinuation.yield(sender) }
        }
      }
      var listeningIterator = listening.makeAsyncIterator()
      _ = await listeningIterator.next()
      await cluster.stop(0)
      var iterator = rebalances.makeAsyncIterator()
      #expect(await iterator.next() == "coord-a")
      // The passes' 100 ms floor is the only time that has to pass; the next regular pass is 3.3 s away.
      cluster.clock.advance(byMicros: 100_000)
      await cluster.coordinators[1].dispatcher.waitUntilOwning(4)
      listener.cancel()
      _ = await listener.result
    }
  }

  @Test("a crashed coordinator's partitions are taken over once their leases run out")
  func crashedOwnersPartitionsAreTakenAfterExpiry() async throws {
    try await ClusterHarness.with(ids: ["coord-b"]) { cluster in
      // A coordinator that crashed (no release, no leave) held every partition until start + 10 s.
      let ghostExpiry = Harness.start + 10_000_000
      let store = cluster.stores[0]
      _ = try await store.heartbeatCoordinator(CoordinatorMember(id: "ghost"), now: Harness.start, expiresAt: ghostExpiry)
      let all = (Int32(0)..<4).map { Partition(rawValue: $0) }
      #expect(try await store.acquirePartitions(all, owner: "ghost", incarnation: 1, now: Harness.start, expiresAt: ghostExpiry).count == 4)
      let onB = try await cluster.executor("exec-b", via: 0)
      let id = try await cluster.client("alice", via: 0).schedule(once: 12)
      await cluster.coordinators[0].dispatcher.keepPartitionsPass()
      #expect(await cluster.owned(0).isEmpty, "the ghost's leases are still live")
      cluster.clock.advance(byMicros: 10_000_000)
      await cluster.coordinators[0].dispatcher.keepPartitionsPass()
      #expect(await cluster.owned(0) == [0, 1, 2, 3])
      #expect(try await store.partitionLeases().allSatisfy { $0.owner == "coord-b" && $0.epoch == 2 })
      onB.grant(1)
      cluster.clock.advance(byMicros: 2_000_000)
      #expect(try await onB.nextLease().taskID == id)
      await onB.close()
    }
  }

  @Test("a coordinator without executors takes no partitions until one connects")
  func onlyCoordinatorsWithExecutorsOwnPartitions() async throws {
    try await ClusterHarness.with(ids: Self.ids) { cluster in
      let onB = try await cluster.executor("exec-b", via: 1)
      try await cluster.converge(members: [1])
      #expect(await cluster.owned(1) == [0, 1, 2, 3])
      // Whatever its partition, a run scheduled through A goes out from B.
      let id = try await cluster.client("alice", via: 0).schedule(once: 1)
      onB.grant(1)
      cluster.clock.advance(byMicros: 1_000_000)
      #expect(try await onB.nextLease().taskID == id)
      let onA = try await cluster.executor("exec-a", via: 0)
      try await cluster.converge()
      #expect(!(await cluster.owned(0)).isEmpty)
      // Its last executor gone, A leaves at its next pass and B takes everything back.
      await onA.close()
      try await cluster.converge(members: [1])
      await onB.close()
    }
  }

  @Test("deleting through one coordinator cancels the run another coordinator leased")
  func cancelReachesTheLeasingCoordinatorsExecutor() async throws {
    try await Self.withSplitCluster { cluster, onA, onB in
      let id = try await cluster.schedule(via: 0, landingOn: 0, inSeconds: 1)
      onA.grant(1)
      cluster.clock.advance(byMicros: 1_000_000)
      let lease = try await onA.nextLease()
      let response = try await cluster.client("alice", via: 1).delete(id, cancelRunning: true)
      #expect(response.cancelledRun)
      let message = try await onA.next()
      guard case .cancel(let cancel)? = message.kind else {
        Issue.record("expected a cancel, got \(message)")
        return
      }
      #expect(cancel.runID == lease.runID)
      #expect(cancel.fence == lease.fence)
    }
  }

  /// Runs `body` with a real executor (`exec-1`, the `exec` operator, `slots` slots) holding a
  /// stream to every coordinator of `cluster` (through transports the test can cut), once all
  /// of them count it; drains it afterwards. `body` gets the executor's temporary folder.
  ///
  /// With `given`, the executor is given only those coordinators, and learns the others from
  /// the cluster's announcements: an address `ID.test:7443` reaches coordinator `ID` in process.
  static func withRealExecutor(
    in cluster: ClusterHarness, slots: Int, given: [Int]? = nil,
    _ body: (_ directory: String, _ transports: [SeveringTransport]) async throws -> Void
  ) async throws {
    var logger = Logger(label: "test.cluster.executor")
    logger.logLevel = .warning
    let directory = NSTemporaryDirectory() + "hourglass-cluster-executor-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: directory) }
    var configuration = ExecutorConfiguration.defaults
    configuration.executorID = "exec-1"
    configuration.slots = slots
    configuration.operators = ["exec"]
    configuration.temporaryDirectory = directory
    configuration.drainGrace = .seconds(5)
    let peer = PeerIdentity(name: "exec-1", role: "executor")
    let given = given ?? Array(cluster.coordinators.indices)
    let transports = given.map {
      SeveringTransport(InProcessTransport(server: cluster.coordinators[$0].server, peer: peer))
    }
    let discovery = CoordinatorDiscovery { address in
      guard let index = cluster.ids.firstIndex(where: { "\($0).test:7443" == address }) else {
        throw RPCError(code: .invalidArgument, message: "no coordinator at \(address)")
      }
      return InProcessTransport(server: cluster.coordinators[index].server, peer: peer)
    }
    let executor = Executor(
      configuration: configuration, transports: transports, clock: ContinuousClock(), logger: logger,
      discovery: given.count < cluster.coordinators.count ? discovery : nil)
    try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask { try await executor.run() }
      // The coordinators it was given; the test waits for the others itself.
      for coordinator in given.map({ cluster.coordinators[$0] }) {
        try #require(await bounded("the executor registering") { await coordinator.dispatcher.waitUntilExecutorsConnected(1) } != nil)
      }
      try await body(directory, transports)
      executor.drain()
      try await group.waitForAll()
    }
  }

  @Test("one real executor with a stream to each coordinator runs the runs of every partition, its two slots going where the runs are")
  func oneExecutorServesEveryCoordinator() async throws {
    // The executor stamps heartbeats with the wall clock; the coordinators' clock is manual.
    try await ClusterHarness.with(ids: Self.ids, configure: { $0.skewBoundMicros = Int64.max / 4 }) { cluster in
      try await Self.withRealExecutor(in: cluster, slots: 2) { _, _ in
        try await cluster.converge()
        let alice = cluster.client("alice", via: 0)
        var scheduled: [String] = []
        for owner in cluster.coordinators.indices {
          for _ in 0..<3 { scheduled.append(try await cluster.schedule(via: 0, landingOn: owner, inSeconds: 1)) }
        }
        cluster.clock.advance(byMicros: 1_000_000)
        for coordinator in cluster.coordinators {
          try #require(await bounded("three results recorded") { await coordinator.waitUntilRecorded(3) } != nil)
        }
        for id in scheduled { #expect(try await alice.get(id).taskStatus == .succeeded) }
      }
    }
  }

  @Test(
    "an executor given one coordinator finds the other through the cluster's announcement, which then takes its share of the partitions"
  )
  func executorFindsAnAdvertisedCoordinator() async throws {
    try await ClusterHarness.with(
      ids: Self.ids,
      configure: {
        $0.skewBoundMicros = Int64.max / 4
        $0.advertiseAddress = "\($0.coordinatorID).test:7443"
        // Announcements travel in heartbeat acknowledgements: heartbeats every 50 ms (the
        // executor's clock is real).
        $0.heartbeatIntervalMicros = 50_000
      }
    ) { cluster in
      // B has no executor: a membership pass heartbeats it as not dispatching, so it owns nothing.
      await cluster.coordinators[1].dispatcher.keepPartitionsPass()
      #expect(await cluster.owned(1).isEmpty)
      try await Self.withRealExecutor(in: cluster, slots: 2, given: [0]) { _, _ in
        // A's pass reads B's row; its next HeartbeatAck announces B, and the executor connects.
        await cluster.coordinators[0].dispatcher.keepPartitionsPass()
        let peers = await cluster.coordinators[0].dispatcher.clusterPeers
        #expect(peers?.map(\.id) == ["coord-a", "coord-b"])
        #expect(peers?.first { $0.id == "coord-b" }?.dispatching == false)
        try #require(await bounded("the executor finding B") { await cluster.coordinators[1].dispatcher.waitUntilExecutorsConnected(1) } != nil)
        try await cluster.converge()
        #expect(!(await cluster.owned(1)).isEmpty, "B dispatches once its executor arrived")
        var scheduled: [String] = []
        for owner in cluster.coordinators.indices {
          scheduled.append(try await cluster.schedule(via: 0, landingOn: owner, inSeconds: 1))
        }
        cluster.clock.advance(byMicros: 1_000_000)
        for coordinator in cluster.coordinators {
          try #require(await bounded("a result recorded") { await coordinator.waitUntilRecorded(1) } != nil)
        }
        let alice = cluster.client("alice", via: 1)
        for id in scheduled { #expect(try await alice.get(id).taskStatus == .succeeded) }
      }
    }
  }

  @Test("a coordinator that shuts down while its run is going: the executor reports the run through the other, which records it")
  func resultOutlivesItsCoordinator() async throws {
    try await ClusterHarness.with(ids: Self.ids, configure: { $0.skewBoundMicros = Int64.max / 4 }) { cluster in
      try await Self.withRealExecutor(in: cluster, slots: 2) { directory, transports in
        // The run holds until the test writes a line into this FIFO.
        let fifo = directory + "/go.fifo"
        try #require(mkfifo(fifo, 0o600) == 0)
        try await cluster.converge()
        let alice = cluster.client("alice", via: 1)
        // A task in A's partitions whose script waits on the FIFO.
        var id = ""
        for _ in 0..<64 {
          let candidate = try await cluster.client("alice", via: 0).schedule(once: 1, blob: Array("#!/bin/sh\nread line < \(fifo)\n".utf8))
          let owned = Set(await cluster.owned(0))
          if owned.contains(Partition(taskID: try #require(TaskID(candidate)), count: 4).rawValue) {
            id = candidate
            break
          }
          _ = try await cluster.client("alice", via: 0).delete(candidate)
        }
        try #require(!id.isEmpty)
        cluster.clock.advance(byMicros: 1_000_000)
        // Opening the FIFO for writing returns once the run's script has opened it to read.
        let writer = await bounded("the run starting") {
          await withCheckedContinuation { continuation in
            Thread { continuation.resume(returning: open(fifo, O_WRONLY)) }.start()
          }
        }
        let fd = try #require(writer)
        try #require(fd >= 0)
        // Coordinator A, which leased the run, goes away (its connections with it); the run
        // finishes afterwards.
        await cluster.stop(0)
        transports[0].sever()
        _ = "go\n".withCString { write(fd, $0, 3) }
        close(fd)
        try #require(await bounded("the result recorded by B") { await cluster.coordinators[1].waitUntilRecorded(1) } != nil)
        #expect(try await alice.get(id).taskStatus == .succeeded)
      }
    }
  }
}
