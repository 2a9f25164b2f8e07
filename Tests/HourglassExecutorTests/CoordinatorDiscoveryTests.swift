import Foundation
import HourglassCore
import HourglassProto
import Testing

@testable import HourglassExecutor

/// An executor learning the coordinators of a cluster from the ones it is connected to
/// (`ClusterPeers` in `Registered` and `HeartbeatAck`): links opened for the announced ones,
/// given up when no longer announced, one link per coordinator.
@Suite("executor state machine, coordinators announced by the cluster")
struct CoordinatorDiscoveryTests {
  typealias Machine = ExecutorStateMachine<ManualClock.Instant>
  typealias Action = Machine.Action

  static func at(_ seconds: Int) -> ManualClock.Instant { ManualClock.Instant(offset: .seconds(seconds)) }

  static func machine(slots: Int = 4, coordinators: Int = 1, discovery: Bool = true, maxDiscovered: Int = 64) -> Machine {
    Machine(
      settings: .init(
        executorID: "e1", slots: slots, operators: ["noop"], version: "test", heartbeatInterval: .seconds(10),
        leaseDurationFallback: .seconds(30), backoff: .init(initial: .seconds(1), maximum: .seconds(8), multiplier: 2, jitter: 0),
        drainGrace: .seconds(60), closeTimeout: .seconds(5), coordinators: coordinators, discovery: discovery, maxDiscovered: maxDiscovered))
  }

  static func peers(_ members: [(String, String)]) -> Hourglass_V1_ClusterPeers {
    .with {
      $0.coordinators = members.map { member in
        .with {
          $0.coordinatorID = member.0
          $0.address = member.1
        }
      }
    }
  }

  static func registered(_ id: String, announcing members: [(String, String)]?) -> Hourglass_V1_CoordinatorMessage {
    .with {
      $0.registered = .with {
        $0.coordinatorID = id
        $0.leaseDuration.seconds = 30
        $0.withdrawals = true
        if let members { $0.cluster = peers(members) }
      }
    }
  }

  static func ack(_ sequence: UInt64, announcing members: [(String, String)]?) -> Hourglass_V1_CoordinatorMessage {
    .with {
      $0.heartbeatAck = .with {
        $0.sequence = sequence
        $0.eligible = true
        if let members { $0.cluster = peers(members) }
      }
    }
  }

  static func added(_ actions: [Action]) -> [(Int, String)] {
    actions.compactMap { if case .addCoordinator(let index, let address) = $0 { return (index, address) } else { return nil } }
  }

  static func removed(_ actions: [Action]) -> [Int] {
    actions.compactMap { if case .removeCoordinator(let index) = $0 { return index } else { return nil } }
  }

  static func connects(_ actions: [Action]) -> [(connection: UInt64, coordinator: Int)] {
    actions.compactMap { if case .connect(let connection, let coordinator) = $0 { return (connection, coordinator) } else { return nil } }
  }

  static func reconnects(_ actions: [Action]) -> [Int] {
    actions.compactMap { if case .schedule(.reconnect(let index), _) = $0 { return index } else { return nil } }
  }

  /// Given coordinator a (stream 1), which announces itself and b; b's link is number 1 on
  /// stream 2, registered, and holds two of the four slots (a gave them back).
  static func learntB() -> Machine {
    var machine = Self.machine()
    _ = machine.start(now: Self.at(0))
    _ = machine.received(Self.registered("a", announcing: [("a", "a:1"), ("b", "b:1")]), on: 1, now: Self.at(0))
    _ = machine.received(Self.registered("b", announcing: [("a", "a:1"), ("b", "b:1")]), on: 2, now: Self.at(0))
    _ = machine.received(.with { $0.withdrawn.credits = 2 }, on: 1, now: Self.at(0))
    return machine
  }

  @Test("Registered announcing another coordinator opens a link to it, with its address, that registers and gets slots")
  func registeredAnnouncesAPeer() {
    var machine = Self.machine()
    _ = machine.start(now: Self.at(0))
    let actions = machine.received(Self.registered("a", announcing: [("a", "a:1"), ("b", "b:1")]), on: 1, now: Self.at(0))
    #expect(Self.added(actions).map(\.0) == [1] && Self.added(actions).map(\.1) == ["b:1"])
    #expect(Self.connects(actions).map(\.coordinator) == [1])
    #expect(machine.links.count == 2 && machine.knownCount == 2)
    #expect(machine.links[1].coordinatorID == "b")
    let connection = Self.connects(actions)[0].connection
    let second = machine.received(Self.registered("b", announcing: [("a", "a:1"), ("b", "b:1")]), on: connection, now: Self.at(0))
    #expect(machine.connectedCount == 2)
    // Every slot was a's: half of them are asked back for b, as for any second coordinator.
    let withdrawals = second.compactMap { action -> (UInt64, UInt32)? in
      if case .send(let message, let on) = action, case .withdrawal(let withdrawal)? = message.kind { return (on, withdrawal.credits) }
      return nil
    }
    #expect(withdrawals.map(\.0) == [1] && withdrawals.map(\.1) == [2])
    _ = machine.received(.with { $0.withdrawn.credits = 2 }, on: 1, now: Self.at(0))
    #expect(machine.links.map(\.outstandingCredits) == [2, 2])
  }

  @Test("without discovery, or from an older coordinator that announces nothing, no link is added")
  func nothingLearntWithoutDiscoveryOrAnnouncement() {
    var off = Self.machine(discovery: false)
    _ = off.start(now: Self.at(0))
    #expect(Self.added(off.received(Self.registered("a", announcing: [("b", "b:1")]), on: 1, now: Self.at(0))).isEmpty)
    #expect(off.links.count == 1)
    var older = Self.machine()
    _ = older.start(now: Self.at(0))
    #expect(Self.added(older.received(Self.registered("a", announcing: nil), on: 1, now: Self.at(0))).isEmpty)
    #expect(Self.added(older.received(Self.ack(1, announcing: nil), on: 1, now: Self.at(1))).isEmpty)
    #expect(older.links.count == 1)
  }

  @Test("a coordinator announced later, in a HeartbeatAck, gets a link then; announced again, nothing more")
  func heartbeatAckAnnouncesANewcomer() {
    var machine = Self.machine()
    _ = machine.start(now: Self.at(0))
    _ = machine.received(Self.registered("a", announcing: [("a", "a:1")]), on: 1, now: Self.at(0))
    #expect(machine.links.count == 1)
    let first = machine.received(Self.ack(1, announcing: [("a", "a:1"), ("c", "c:1")]), on: 1, now: Self.at(10))
    #expect(Self.added(first).map(\.1) == ["c:1"])
    #expect(Self.added(machine.received(Self.ack(2, announcing: [("a", "a:1"), ("c", "c:1")]), on: 1, now: Self.at(20))).isEmpty)
    #expect(machine.links.count == 2)
  }

  @Test("a learnt coordinator whose stream ends while still announced is reached again with backoff")
  func announcedPeerIsRetried() {
    var machine = Self.learntB()
    let ended = machine.connectionEnded(2, error: "reset", now: Self.at(1), random: 0)
    #expect(Self.reconnects(ended) == [1])
    #expect(Self.removed(ended).isEmpty)
    #expect(machine.links[0].outstandingCredits == 4, "its credits went to a")
  }

  @Test("a learnt coordinator no longer announced is given up when its stream ends, not retried; announced again, it reuses its link")
  func vanishedPeerIsGivenUpAndReused() {
    var machine = Self.learntB()
    // a stops announcing b (b left the cluster), then b's stream ends.
    _ = machine.received(Self.ack(1, announcing: [("a", "a:1")]), on: 1, now: Self.at(10))
    #expect(!machine.links[1].retired, "still registered: kept while its stream lasts")
    let ended = machine.connectionEnded(2, error: nil, now: Self.at(11), random: 0)
    #expect(Self.reconnects(ended).isEmpty)
    #expect(Self.removed(ended) == [1])
    #expect(machine.links[1].retired && machine.knownCount == 1)
    #expect(machine.timerFired(.reconnect(1), now: Self.at(20)).isEmpty)
    // b comes back.
    let back = machine.received(Self.ack(2, announcing: [("a", "a:1"), ("b", "b:2")]), on: 1, now: Self.at(30))
    #expect(Self.added(back).map(\.0) == [1] && Self.added(back).map(\.1) == ["b:2"])
    #expect(Self.connects(back).map(\.coordinator) == [1])
    #expect(machine.links.count == 2 && !machine.links[1].retired)
  }

  @Test("a learnt coordinator backing off is given up as soon as the announcements drop it")
  func backingOffPeerIsGivenUpWhenDropped() {
    var machine = Self.learntB()
    _ = machine.connectionEnded(2, error: "reset", now: Self.at(1), random: 0)
    let dropped = machine.received(Self.ack(1, announcing: [("a", "a:1")]), on: 1, now: Self.at(2))
    #expect(Self.removed(dropped) == [1])
    #expect(dropped.contains { if case .cancelTimer(.reconnect(1)) = $0 { true } else { false } })
    #expect(machine.links[1].retired)
  }

  @Test("with no registered coordinator announcing anything, nothing is known to be gone: a learnt link keeps retrying")
  func unknownIsNotGone() {
    var machine = Self.learntB()
    _ = machine.connectionEnded(1, error: "reset", now: Self.at(1), random: 0)
    let ended = machine.connectionEnded(2, error: "reset", now: Self.at(1), random: 0)
    #expect(Self.reconnects(ended) == [1])
    #expect(!machine.links[1].retired)
  }

  @Test("a given coordinator also announced under another address: the announced link is dropped when the given one registers")
  func givenLinkWinsOverAnnouncedTwin() {
    var machine = Self.machine(coordinators: 2)
    let start = machine.start(now: Self.at(0))
    #expect(Self.connects(start).map(\.connection) == [1, 2])
    // a registers first and announces b under an address the executor was not given.
    let learnt = machine.received(Self.registered("a", announcing: [("a", "a:1"), ("b", "10.0.0.2:1")]), on: 1, now: Self.at(0))
    let twin = Self.connects(learnt)[0]
    #expect(twin.coordinator == 2)
    _ = machine.received(Self.registered("b", announcing: nil), on: twin.connection, now: Self.at(0))
    // The given link to b registers too: the announced one goes.
    let given = machine.received(Self.registered("b", announcing: nil), on: 2, now: Self.at(1))
    #expect(Self.removed(given) == [2])
    #expect(given.contains { if case .abandonStream(twin.connection) = $0 { true } else { false } })
    #expect(machine.links[2].retired && machine.links[1].isRegistered)
    #expect(machine.connectedCount == 2)
    #expect(machine.runs.count + machine.outstandingCredits <= 4)
  }

  @Test("a given link that registers while its announced twin is still opening drops the twin's stream")
  func announcedTwinStillOpeningIsDropped() {
    var machine = Self.machine(coordinators: 2)
    _ = machine.start(now: Self.at(0))
    let learnt = machine.received(Self.registered("a", announcing: [("a", "a:1"), ("b", "b.internal:1")]), on: 1, now: Self.at(0))
    let twin = Self.connects(learnt)[0]
    let given = machine.received(Self.registered("b", announcing: nil), on: 2, now: Self.at(0))
    #expect(Self.removed(given) == [twin.coordinator])
    #expect(given.contains { if case .abandonStream(twin.connection) = $0 { true } else { false } })
    // Its Registered, if it comes, is for a stream the executor no longer has.
    #expect(machine.received(Self.registered("b", announcing: nil), on: twin.connection, now: Self.at(0)).isEmpty)
    #expect(machine.connectedCount == 2 && machine.links[1].isRegistered)
    #expect(machine.runs.count + machine.outstandingCredits == 4)
  }

  @Test("at most maxDiscovered links are learnt; the limit is logged once")
  func learntLinksAreBounded() {
    var machine = Self.machine(maxDiscovered: 2)
    _ = machine.start(now: Self.at(0))
    let many = (1...5).map { ("c\($0)", "c\($0):1") }
    let actions = machine.received(Self.registered("a", announcing: many), on: 1, now: Self.at(0))
    #expect(Self.added(actions).count == 2)
    #expect(actions.contains { if case .log(.warning, _, _) = $0 { true } else { false } })
    let again = machine.received(Self.ack(1, announcing: many), on: 1, now: Self.at(10))
    #expect(Self.added(again).isEmpty && !again.contains { if case .log(.warning, _, _) = $0 { true } else { false } })
  }

  @Test("while draining, announcements open no link")
  func drainingLearnsNothing() {
    var machine = Self.machine()
    _ = machine.start(now: Self.at(0))
    _ = machine.received(Self.registered("a", announcing: [("a", "a:1")]), on: 1, now: Self.at(0))
    _ = machine.shutdown(now: Self.at(1))
    #expect(Self.added(machine.received(Self.ack(1, announcing: [("a", "a:1"), ("b", "b:1")]), on: 1, now: Self.at(2))).isEmpty)
  }

  @Test("a run leased by a learnt coordinator that is then given up reports through the given one")
  func runOfAGivenUpCoordinatorReportsElsewhere() {
    var machine = Self.learntB()
    _ = machine.received(
      .with {
        $0.lease = .with {
          $0.runID = "r1"; $0.fence = 7; $0.operator = "noop"
        }
      }, on: 2, now: Self.at(1))
    _ = machine.received(Self.ack(1, announcing: [("a", "a:1")]), on: 1, now: Self.at(10))
    _ = machine.connectionEnded(2, error: nil, now: Self.at(11), random: 0)
    #expect(machine.links[1].retired)
    let finished = machine.runFinished(
      RunKey(runID: "r1", fence: 7), outcome: RunOutcome(status: .succeeded, started: Date(), finished: Date()), now: Self.at(12))
    let results = finished.compactMap { action -> UInt64? in
      if case .send(let message, let connection) = action, case .result? = message.kind { return connection }
      return nil
    }
    #expect(results == [1])
  }
}
