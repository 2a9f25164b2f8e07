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

  @Test("an announced address that reaches another coordinator is given up, and tried again only at a new address")
  func misdirectedAddress() {
    var machine = Self.machine()
    _ = machine.start(now: Self.at(0))
    let learnt = machine.received(Self.registered("a", announcing: [("a", "a:1"), ("b", "wrong:1")]), on: 1, now: Self.at(0))
    let stream = Self.connects(learnt)[0].connection
    // wrong:1 is really coordinator c.
    let registered = machine.received(Self.registered("c", announcing: nil), on: stream, now: Self.at(0))
    #expect(registered.contains { if case .log(.warning, let text, _) = $0 { text.contains("reaches coordinator c") } else { false } })
    #expect(Self.removed(registered) == [1])
    #expect(machine.links[1].retired && machine.links[1].coordinatorID == "b")
    let again = machine.received(Self.ack(1, announcing: [("a", "a:1"), ("b", "wrong:1")]), on: 1, now: Self.at(10))
    #expect(Self.connects(again).isEmpty, "not retried at the same address")
    let fixed = machine.received(Self.ack(2, announcing: [("a", "a:1"), ("b", "b:1")]), on: 1, now: Self.at(20))
    #expect(Self.added(fixed).map(\.0) == [1] && Self.added(fixed).map(\.1) == ["b:1"])
    #expect(Self.connects(fixed).map(\.coordinator) == [1])
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

/// The executor against a simulated cluster whose membership changes under it: coordinators
/// join and leave (abruptly or with `ShuttingDown`), each announces its own, possibly stale,
/// view of the membership, and every message is delivered in a random order per stream.
@Suite("executor state machine, coordinators announced by a changing cluster")
struct ChangingClusterTests {
  typealias Machine = ExecutorStateMachine<ManualClock.Instant>
  typealias Action = Machine.Action

  /// One stream as the simulated coordinator sees it.
  struct Stream {
    var coordinator: Int
    var toCoordinator: [Hourglass_V1_ExecutorMessage] = []
    var toExecutor: [Hourglass_V1_CoordinatorMessage] = []
    var credits = 0
    var taken = 0
    /// The executor half-closed it: the coordinator ends it once it has read everything.
    var halfClosed = false
    /// The coordinator said `ShuttingDown` on it.
    var leaving = false

    /// The coordinator reads one message: counts credits, answers withdrawals and results.
    mutating func read(_ message: Hourglass_V1_ExecutorMessage) {
      switch message.kind {
      case .credit(let grant): credits += Int(grant.credits)
      case .withdrawal(let withdrawal):
        let given = min(Int(withdrawal.credits), credits)
        credits -= given
        toExecutor.append(.with { $0.withdrawn.credits = UInt32(given) })
      case .result(let result):
        toExecutor.append(
          .with {
            $0.resultAck = .with {
              $0.runID = result.runID; $0.fence = result.fence; $0.recorded = true
            }
          })
      default: break
      }
    }
  }

  @Test("links follow the membership, one per coordinator, and the credits stay exact", arguments: Array(1...8) as [UInt64])
  func randomMembership(seed: UInt64) {
    var random = SeededGenerator(seed: seed)
    let slots = 6
    let coordinators = 4
    var machine = CoordinatorDiscoveryTests.machine(slots: slots, coordinators: 1)
    var alive = [true, false, false, false]
    // What each coordinator announces: the membership as it last read it.
    var views = [Set([0]), Set<Int>(), Set<Int>(), Set<Int>()]
    var linkTarget: [Int: Int] = [0: 0]
    var streams: [UInt64: Stream] = [:]
    var ended: [UInt64] = []
    var leased = 0
    var finished = 0
    var now = 0
    var learnt = 0
    var givenUp = 0

    func peers(_ view: Set<Int>) -> [(String, String)] { view.sorted().map { ("c\($0)", "c\($0):1") } }

    func take(_ actions: [Action]) {
      for action in actions {
        switch action {
        case .addCoordinator(let index, let address):
          learnt += 1
          linkTarget[index] = Int(address.dropFirst().prefix { $0.isNumber })!
        case .removeCoordinator:
          givenUp += 1
        case .connect(let connection, let index):
          let target = linkTarget[index]!
          if alive[target] {
            var stream = Stream(coordinator: target)
            stream.toExecutor = [CoordinatorDiscoveryTests.registered("c\(target)", announcing: peers(views[target]))]
            streams[connection] = stream
          } else {
            ended.append(connection)  // refused
          }
        case .send(let message, let connection):
          streams[connection]?.toCoordinator.append(message)
        case .closeStream(let connection):
          streams[connection]?.halfClosed = true
        case .abandonStream(let connection):
          if streams.removeValue(forKey: connection) != nil { ended.append(connection) }
        case .log(.error, let text, _):
          Issue.record("seed \(seed): \(text)")
        default:
          break
        }
      }
      #expect(machine.runs.count + machine.outstandingCredits <= slots, "seed \(seed)")
      let ids = machine.links.filter { !$0.retired }.compactMap(\.coordinatorID)
      #expect(Set(ids).count == ids.count, "seed \(seed): two links to one coordinator: \(ids)")
      #expect(machine.links.count <= 1 + coordinators, "seed \(seed)")
    }

    func end(_ connection: UInt64) {
      streams[connection] = nil
      take(machine.connectionEnded(connection, error: nil, now: CoordinatorDiscoveryTests.at(now), random: 0))
    }

    take(machine.start(now: CoordinatorDiscoveryTests.at(0)))
    for _ in 0..<6_000 {
      now += 1
      let open = streams.keys.sorted()
      let pick = open.isEmpty ? nil : open[Int(random.next() % UInt64(open.count))]
      switch random.next() % 12 {
      case 0, 1:
        // The coordinator reads one message; a half-closed stream it has read out, it ends.
        guard let connection = pick, var stream = streams[connection] else { continue }
        if stream.toCoordinator.isEmpty {
          if stream.halfClosed { end(connection) }
          continue
        }
        stream.read(stream.toCoordinator.removeFirst())
        streams[connection] = stream
      case 2:
        // A lease, unless the coordinator is leaving.
        guard let connection = pick, var stream = streams[connection], stream.credits > 0, !stream.leaving else { continue }
        stream.credits -= 1
        leased += 1
        stream.toExecutor.append(
          .with {
            $0.lease = .with {
              $0.runID = "r\(leased)"; $0.fence = 1; $0.operator = "noop"
            }
          })
        streams[connection] = stream
      case 3, 4:
        guard let connection = pick, !(streams[connection]?.toExecutor.isEmpty ?? true) else { continue }
        let message = streams[connection]!.toExecutor.removeFirst()
        take(machine.received(message, on: connection, now: CoordinatorDiscoveryTests.at(now)))
      case 5:
        guard let key = machine.runs.keys.min(by: { $0.runID < $1.runID }) else { continue }
        finished += 1
        take(machine.runFinished(key, outcome: RunOutcome(status: .succeeded, started: Date(), finished: Date()), now: CoordinatorDiscoveryTests.at(now)))
      case 6:
        // A heartbeat on a registered link, answered with the coordinator's view.
        let registered = machine.links.indices.filter { machine.links[$0].isRegistered }
        guard !registered.isEmpty else { continue }
        let index = registered[Int(random.next() % UInt64(registered.count))]
        let connection = machine.links[index].connection!
        take(machine.timerFired(.heartbeat(index), now: CoordinatorDiscoveryTests.at(now)))
        if let stream = streams[connection] {
          streams[connection]!.toExecutor.append(CoordinatorDiscoveryTests.ack(1, announcing: peers(views[stream.coordinator])))
        }
      case 7:
        // A coordinator reads the membership again.
        let coordinator = Int(random.next() % UInt64(coordinators))
        if alive[coordinator] { views[coordinator] = Set(alive.indices.filter { alive[$0] }) }
      case 8:
        // One of c1…c3 joins or leaves: abruptly, or with ShuttingDown.
        let coordinator = 1 + Int(random.next() % UInt64(coordinators - 1))
        guard random.next() % 4 == 0 else { continue }
        alive[coordinator].toggle()
        if alive[coordinator] {
          views[coordinator] = Set(alive.indices.filter { alive[$0] })
        } else if random.next() % 2 == 0 {
          for (connection, stream) in streams where stream.coordinator == coordinator { end(connection) }
        } else {
          for (connection, stream) in streams where stream.coordinator == coordinator {
            streams[connection]!.leaving = true
            streams[connection]!.toExecutor.append(.with { $0.shuttingDown = .init() })
          }
        }
      case 9:
        // Streams refused or abandoned end now.
        let ending = ended
        ended = []
        for connection in ending { take(machine.connectionEnded(connection, error: "refused", now: CoordinatorDiscoveryTests.at(now), random: 0)) }
      default:
        // Reconnection timers fire.
        for index in machine.links.indices { take(machine.timerFired(.reconnect(index), now: CoordinatorDiscoveryTests.at(now))) }
      }
    }
    // Quiesce: every coordinator reads the membership, every message arrives, every ended
    // stream is reported, every timer fires, until nothing moves.
    for coordinator in alive.indices where alive[coordinator] { views[coordinator] = Set(alive.indices.filter { alive[$0] }) }
    for _ in 0..<50 {
      let ending = ended
      ended = []
      for connection in ending { take(machine.connectionEnded(connection, error: "refused", now: CoordinatorDiscoveryTests.at(now), random: 0)) }
      for index in machine.links.indices { take(machine.timerFired(.reconnect(index), now: CoordinatorDiscoveryTests.at(now))) }
      for connection in streams.keys.sorted() {
        guard var stream = streams[connection] else { continue }
        while !stream.toCoordinator.isEmpty {
          stream.read(stream.toCoordinator.removeFirst())
        }
        streams[connection] = stream
        if stream.halfClosed {
          end(connection)
          continue
        }
        if let index = machine.links.firstIndex(where: { $0.connection == connection }), machine.links[index].isRegistered {
          streams[connection]!.toExecutor.append(CoordinatorDiscoveryTests.ack(1, announcing: peers(views[stream.coordinator])))
        }
        while let message = streams[connection]?.toExecutor.first {
          streams[connection]!.toExecutor.removeFirst()
          take(machine.received(message, on: connection, now: CoordinatorDiscoveryTests.at(now)))
        }
      }
    }
    // Every live coordinator is reached by exactly one registered link, and no link is kept to
    // a gone one; each registered link's credits are what its coordinator counts.
    let live = Set(alive.indices.filter { alive[$0] }.map { "c\($0)" })
    let registered = machine.links.filter(\.isRegistered).compactMap(\.coordinatorID)
    #expect(Set(registered) == live, "seed \(seed): registered with \(registered.sorted()), live \(live.sorted())")
    let kept = machine.links.filter { !$0.retired && $0.announcedAddress != nil }.compactMap(\.coordinatorID)
    #expect(Set(kept).isSubset(of: live), "seed \(seed): links kept to \(kept.sorted())")
    for link in machine.links where link.isRegistered {
      #expect(link.outstandingCredits == streams[link.connection!]?.credits, "seed \(seed)")
    }
    #expect(finished > 20, "seed \(seed): the slots kept being used")
    #expect(learnt > 3 && givenUp > 0, "seed \(seed): \(learnt) links learnt, \(givenUp) given up")
    #expect(machine.sentResults.isEmpty, "seed \(seed): \(machine.sentResults.count) results never acknowledged")
  }
}
