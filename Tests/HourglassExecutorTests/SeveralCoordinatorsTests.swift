import Foundation
import HourglassCore
import HourglassProto
import Testing

@testable import HourglassExecutor

/// An executor with a stream to each of several coordinators: slots shared as credits, credits
/// moved to where leases are used, each lease's renewals and result on its own stream.
@Suite("executor state machine, several coordinators")
struct SeveralCoordinatorsTests {
  typealias Machine = ExecutorStateMachine<ManualClock.Instant>
  typealias Action = Machine.Action

  static func at(_ seconds: Int) -> ManualClock.Instant { ManualClock.Instant(offset: .seconds(seconds)) }

  static func machine(slots: Int, coordinators: Int) -> Machine {
    Machine(
      settings: .init(
        executorID: "e1", slots: slots, operators: ["noop"], version: "test", heartbeatInterval: .seconds(10),
        leaseDurationFallback: .seconds(30), backoff: .init(initial: .seconds(1), maximum: .seconds(8), multiplier: 2, jitter: 0),
        drainGrace: .seconds(60), closeTimeout: .seconds(5), coordinators: coordinators))
  }

  static func registered(_ id: String, withdrawals: Bool = true) -> Hourglass_V1_CoordinatorMessage {
    .with {
      $0.registered = .with {
        $0.coordinatorID = id; $0.leaseDuration.seconds = 30; $0.withdrawals = withdrawals
      }
    }
  }

  static func lease(_ runID: String) -> Hourglass_V1_CoordinatorMessage {
    .with {
      $0.lease = .with {
        $0.runID = runID; $0.fence = 1; $0.operator = "noop"
      }
    }
  }

  static func withdrawn(_ credits: UInt32) -> Hourglass_V1_CoordinatorMessage {
    .with { $0.withdrawn.credits = credits }
  }

  /// Messages sent, with the stream each went on.
  static func sent(_ actions: [Action]) -> [(UInt64, Hourglass_V1_ExecutorMessage.OneOf_Kind?)] {
    actions.compactMap { if case .send(let message, let connection) = $0 { return (connection, message.kind) } else { return nil } }
  }

  static func credits(_ actions: [Action], on connection: UInt64) -> UInt32 {
    sent(actions).reduce(0) { total, entry in
      if entry.0 == connection, case .credit(let grant)? = entry.1 { return total + grant.credits }
      return total
    }
  }

  /// The results sent on stream `connection`.
  static func results(_ actions: [Action], on connection: UInt64) -> [Hourglass_V1_RunResult] {
    sent(actions).compactMap { entry in
      if entry.0 == connection, case .result(let result)? = entry.1 { return result }
      return nil
    }
  }

  static func withdrawals(_ actions: [Action]) -> [(UInt64, UInt32)] {
    sent(actions).compactMap { entry in
      if case .withdrawal(let withdrawal)? = entry.1 { return (entry.0, withdrawal.credits) }
      return nil
    }
  }

  /// A machine with coordinators a (stream 1) and b (stream 2) both registered; a registered
  /// first, so it was granted every slot and b asked it for half of them back.
  static func bothRegistered(slots: Int) -> Machine {
    var machine = Self.machine(slots: slots, coordinators: 2)
    _ = machine.start(now: Self.at(0))
    _ = machine.received(Self.registered("a"), on: 1, now: Self.at(0))
    _ = machine.received(Self.registered("b"), on: 2, now: Self.at(0))
    return machine
  }

  static func outcome() -> RunOutcome { RunOutcome(status: .succeeded, started: Date(), finished: Date()) }

  @Test("starting opens a stream to every coordinator, each beginning with Register")
  func connectsToAll() {
    var machine = Self.machine(slots: 4, coordinators: 3)
    let actions = machine.start(now: Self.at(0))
    let connects = actions.compactMap { if case .connect(let connection, let coordinator) = $0 { return (connection, coordinator) } else { return nil } }
    #expect(connects.map(\.1) == [0, 1, 2])
    #expect(Set(connects.map(\.0)).count == 3)
    for (connection, _) in connects {
      #expect(Self.sent(actions).contains { $0.0 == connection && { if case .register? = $0.1 { true } else { false } }($0) })
    }
  }

  @Test("the first coordinator to register gets every slot; the second gets half of them back from it by a withdrawal")
  func secondCoordinatorGetsAShare() {
    var machine = Self.machine(slots: 8, coordinators: 2)
    _ = machine.start(now: Self.at(0))
    #expect(Self.credits(machine.received(Self.registered("a"), on: 1, now: Self.at(0)), on: 1) == 8)
    let second = machine.received(Self.registered("b"), on: 2, now: Self.at(0))
    #expect(Self.credits(second, on: 2) == 0, "no slot is free: all are a's credits")
    #expect(Self.withdrawals(second).map(\.0) == [1] && Self.withdrawals(second).map(\.1) == [4])
    // a had already used one of the four for a lease on its way: it gives back three.
    _ = machine.received(Self.lease("r1"), on: 1, now: Self.at(1))
    let answer = machine.received(Self.withdrawn(3), on: 1, now: Self.at(1))
    #expect(Self.credits(answer, on: 2) == 3)
    #expect(machine.links[0].outstandingCredits == 4 && machine.links[1].outstandingCredits == 3)
    #expect(machine.runs.count + machine.outstandingCredits == 8)
  }

  @Test("a coordinator that has used its last credit draws half of an idle one's credits")
  func creditsFollowTheLeases() {
    var machine = Self.bothRegistered(slots: 4)
    _ = machine.received(Self.withdrawn(2), on: 1, now: Self.at(0))
    #expect(machine.links.map(\.outstandingCredits) == [2, 2])
    _ = machine.received(Self.lease("r1"), on: 2, now: Self.at(1))
    let last = machine.received(Self.lease("r2"), on: 2, now: Self.at(1))
    #expect(Self.withdrawals(last).map(\.0) == [1] && Self.withdrawals(last).map(\.1) == [1])
    let answer = machine.received(Self.withdrawn(1), on: 1, now: Self.at(2))
    #expect(Self.credits(answer, on: 2) == 1)
    #expect(machine.links.map(\.outstandingCredits) == [1, 1])
  }

  @Test("a freed slot goes to the coordinator with the fewest credits; between equals, first to one never granted any, then to the one that leased last")
  func freedSlotGoesWhereNeeded() {
    var machine = Self.machine(slots: 2, coordinators: 2)
    _ = machine.start(now: Self.at(0))
    _ = machine.received(Self.registered("a", withdrawals: false), on: 1, now: Self.at(0))
    _ = machine.received(Self.registered("b", withdrawals: false), on: 2, now: Self.at(0))
    #expect(machine.links.map(\.outstandingCredits) == [2, 0], "a coordinator without withdrawals keeps what it holds")
    #expect(Self.withdrawals(machine.timerFired(.heartbeat(1), now: Self.at(10))).isEmpty, "and is not asked on a heartbeat either")
    _ = machine.received(Self.lease("r1"), on: 1, now: Self.at(11))
    _ = machine.received(Self.lease("r2"), on: 1, now: Self.at(12))
    // Both at zero credits: b has never had one.
    let freed = machine.runFinished(RunKey(runID: "r1", fence: 1), outcome: Self.outcome(), now: Self.at(13))
    #expect(Self.credits(freed, on: 2) == 1 && Self.credits(freed, on: 1) == 0)
    // Now a holds none and b one: the next goes to a.
    let next = machine.runFinished(RunKey(runID: "r2", fence: 1), outcome: Self.outcome(), now: Self.at(14))
    #expect(Self.credits(next, on: 1) == 1)
    // Both hold one, a leased last: with a slot more, a would get it. Both spend theirs.
    _ = machine.received(Self.lease("r3"), on: 2, now: Self.at(15))
    _ = machine.received(Self.lease("r4"), on: 1, now: Self.at(16))
    let tie = machine.runFinished(RunKey(runID: "r3", fence: 1), outcome: Self.outcome(), now: Self.at(17))
    #expect(Self.credits(tie, on: 1) == 1, "both granted before, both at zero: a leased last")
  }

  @Test("renewals and the result of a lease go to the coordinator that granted it")
  func leaseStaysOnItsStream() {
    var machine = Self.bothRegistered(slots: 2)
    _ = machine.received(Self.withdrawn(1), on: 1, now: Self.at(0))
    _ = machine.received(Self.lease("r1"), on: 2, now: Self.at(0))
    let key = RunKey(runID: "r1", fence: 1)
    let renewal = Self.sent(machine.timerFired(.renewal(key), now: Self.at(10)))
    #expect(renewal.count == 1 && renewal[0].0 == 2)
    let finished = machine.runFinished(key, outcome: Self.outcome(), now: Self.at(11))
    #expect(!Self.results(finished, on: 2).isEmpty)
  }

  @Test("while its coordinator's stream is down, a run renews and reports through another coordinator")
  func otherCoordinatorCarriesTheRun() {
    var machine = Self.bothRegistered(slots: 2)
    _ = machine.received(Self.lease("r1"), on: 1, now: Self.at(0))
    let key = RunKey(runID: "r1", fence: 1)
    // a restarts (a rolling upgrade): its stream ends.
    _ = machine.connectionEnded(1, error: "going away", now: Self.at(5), random: 0)
    let renewal = Self.sent(machine.timerFired(.renewal(key), now: Self.at(10)))
    #expect(renewal.count == 1 && renewal[0].0 == 2, "the renewal goes to b")
    let finished = machine.runFinished(key, outcome: Self.outcome(), now: Self.at(11))
    #expect(!Self.results(finished, on: 2).isEmpty, "so does the result")
    #expect(machine.runs.isEmpty)
  }

  @Test("with every stream down, a finished run's result goes out on the first coordinator that registers again")
  func resultWaitsForAnyCoordinator() {
    var machine = Self.bothRegistered(slots: 2)
    _ = machine.received(Self.lease("r1"), on: 1, now: Self.at(0))
    let key = RunKey(runID: "r1", fence: 1)
    _ = machine.connectionEnded(1, error: "reset", now: Self.at(1), random: 0)
    _ = machine.connectionEnded(2, error: "reset", now: Self.at(1), random: 0)
    #expect(Self.sent(machine.runFinished(key, outcome: Self.outcome(), now: Self.at(2))).isEmpty)
    let reconnect = machine.timerFired(.reconnect(1), now: Self.at(3))
    guard case .connect(let connection, 1)? = reconnect.first else {
      Issue.record("no reconnect: \(reconnect)")
      return
    }
    let sent = Self.sent(machine.received(Self.registered("b"), on: connection, now: Self.at(3)))
    guard case .result(let result)? = sent.first?.1 else {
      Issue.record("expected the result first: \(sent)")
      return
    }
    #expect(result.runID == "r1" && sent.first?.0 == connection)
  }

  @Test("when one stream ends, its credits go to the others while it reconnects")
  func creditsMoveWhenAStreamEnds() {
    var machine = Self.bothRegistered(slots: 4)
    _ = machine.received(Self.withdrawn(2), on: 1, now: Self.at(0))
    let ended = machine.connectionEnded(1, error: "reset", now: Self.at(1), random: 0)
    #expect(Self.credits(ended, on: 2) == 2)
    #expect(ended.contains { if case .schedule(.reconnect(0), _) = $0 { true } else { false } })
    #expect(machine.links.map(\.outstandingCredits) == [0, 4])
    #expect(machine.connectedCount == 1)
  }

  @Test("drain: Draining goes to every coordinator, every stream closes, and the executor stops once all have ended")
  func drainsEveryStream() {
    var machine = Self.bothRegistered(slots: 2)
    _ = machine.received(Self.lease("r1"), on: 1, now: Self.at(0))
    let shutdown = machine.shutdown(now: Self.at(1))
    #expect(Self.sent(shutdown).map(\.0).sorted() == [1, 2])
    let finished = machine.runFinished(RunKey(runID: "r1", fence: 1), outcome: Self.outcome(), now: Self.at(2))
    #expect(Self.credits(finished, on: 1) == 0 && Self.credits(finished, on: 2) == 0)
    // The streams close once the result is acknowledged.
    let acknowledged = machine.received(ExecutorStateMachineTests.acknowledged("r1"), on: 1, now: Self.at(2))
    let closed = acknowledged.compactMap { if case .closeStream(let connection) = $0 { return connection } else { return nil } }
    #expect(closed.sorted() == [1, 2])
    #expect(!machine.connectionEnded(1, error: nil, now: Self.at(3), random: 0).contains { if case .finish = $0 { true } else { false } })
    #expect(machine.connectionEnded(2, error: nil, now: Self.at(3), random: 0).contains { if case .finish = $0 { true } else { false } })
  }

  @Test("draining, a coordinator owed nothing that cannot be reached is not retried")
  func drainDropsUnreachableCoordinator() {
    var machine = Self.machine(slots: 2, coordinators: 2)
    _ = machine.start(now: Self.at(0))
    _ = machine.received(Self.registered("a"), on: 1, now: Self.at(0))
    _ = machine.connectionEnded(2, error: "refused", now: Self.at(0), random: 0)
    _ = machine.received(Self.lease("r1"), on: 1, now: Self.at(0))
    let shutdown = machine.shutdown(now: Self.at(1))
    #expect(shutdown.contains { if case .cancelTimer(.reconnect(1)) = $0 { true } else { false } })
    _ = machine.runFinished(RunKey(runID: "r1", fence: 1), outcome: Self.outcome(), now: Self.at(2))
    let acknowledged = machine.received(ExecutorStateMachineTests.acknowledged("r1"), on: 1, now: Self.at(2))
    #expect(acknowledged.contains { if case .closeStream(1) = $0 { true } else { false } })
    #expect(machine.connectionEnded(1, error: nil, now: Self.at(3), random: 0).contains { if case .finish = $0 { true } else { false } })
  }

  @Test("slots: 1 and two coordinators: the one that never had the credit draws it from the idle one on its heartbeat")
  func oneSlotReachesTheOtherCoordinator() {
    var machine = Self.bothRegistered(slots: 1)
    #expect(machine.links.map(\.outstandingCredits) == [1, 0])
    // b's heartbeat: a has held its credit unused for an interval, b never had one.
    let tick = machine.timerFired(.heartbeat(1), now: Self.at(10))
    #expect(Self.withdrawals(tick).map(\.0) == [1] && Self.withdrawals(tick).map(\.1) == [1])
    #expect(Self.credits(machine.received(Self.withdrawn(1), on: 1, now: Self.at(10)), on: 2) == 1)
    // a's heartbeat does not take it back: b has not leased less recently than a.
    #expect(Self.withdrawals(machine.timerFired(.heartbeat(0), now: Self.at(20))).isEmpty)
    // a busy coordinator keeps a freed slot that ties at zero credits: it leased last.
    _ = machine.received(Self.lease("r1"), on: 2, now: Self.at(21))
    let freed = machine.runFinished(RunKey(runID: "r1", fence: 1), outcome: Self.outcome(), now: Self.at(22))
    #expect(Self.credits(freed, on: 2) == 1)
  }

  @Test("a coordinator whose clock check failed gets credits back as soon as it passes again")
  func eligibleAgainDrawsCredits() {
    var machine = Self.bothRegistered(slots: 4)
    _ = machine.received(Self.withdrawn(2), on: 1, now: Self.at(0))
    _ = machine.received(Self.lease("r1"), on: 2, now: Self.at(1))
    _ = machine.received(Self.lease("r2"), on: 2, now: Self.at(1))
    _ = machine.received(Self.withdrawn(1), on: 1, now: Self.at(1))
    _ = machine.received(Self.lease("r3"), on: 2, now: Self.at(1))
    #expect(machine.links.map(\.outstandingCredits) == [1, 0])
    // b finds the clock out of bounds; two of its runs end and the slots go to a.
    _ = machine.received(.with { $0.heartbeatAck = .with { $0.eligible = false } }, on: 2, now: Self.at(2))
    _ = machine.runFinished(RunKey(runID: "r1", fence: 1), outcome: Self.outcome(), now: Self.at(3))
    _ = machine.runFinished(RunKey(runID: "r2", fence: 1), outcome: Self.outcome(), now: Self.at(3))
    #expect(machine.links.map(\.outstandingCredits) == [3, 0])
    // Back in bounds: b asks a at once.
    let back = machine.received(.with { $0.heartbeatAck = .with { $0.eligible = true } }, on: 2, now: Self.at(4))
    #expect(Self.withdrawals(back).map(\.0) == [1])
  }

  @Test("drain: a coordinator that is being retried or still registering does not hold up the stop")
  func closingEndsRetriesAndUnregisteredStreams() {
    var machine = Self.machine(slots: 2, coordinators: 3)
    _ = machine.start(now: Self.at(0))
    _ = machine.received(Self.registered("a"), on: 1, now: Self.at(0))
    _ = machine.received(Self.lease("r1"), on: 1, now: Self.at(0))
    _ = machine.connectionEnded(2, error: "refused", now: Self.at(0), random: 0)
    _ = machine.shutdown(now: Self.at(1))
    _ = machine.runFinished(RunKey(runID: "r1", fence: 1), outcome: Self.outcome(), now: Self.at(2))
    let finished = machine.received(ExecutorStateMachineTests.acknowledged("r1"), on: 1, now: Self.at(2))
    #expect(finished.contains { if case .closeStream(1) = $0 { true } else { false } })
    #expect(finished.contains { if case .abandonStream(3) = $0 { true } else { false } })
    #expect(machine.timerFired(.reconnect(1), now: Self.at(3)).isEmpty, "no new stream while closing")
    _ = machine.connectionEnded(1, error: nil, now: Self.at(3), random: 0)
    #expect(machine.connectionEnded(3, error: "cancelled", now: Self.at(3), random: 0).contains { if case .finish = $0 { true } else { false } })
  }

  /// Coordinators that take credits, withdraw and push leases as the protocol says, driven in a
  /// random order with every message in flight on FIFO streams: a coordinator takes a credit
  /// for a lease some steps before it sends it (as the dispatcher does, around its store call),
  /// so withdrawal answers overtake leases; streams end and reconnect; clock checks fail and
  /// pass. The executor never receives a lease it has no credit for and never runs more than
  /// its slots; the coordinators' credits and the runs never exceed the slots; and once every
  /// message has arrived, each coordinator holds exactly the credits the executor counts for it.
  @Test("random interleavings with three coordinators keep the credits exact", arguments: [1, 2, 3, 4, 5, 6, 7, 8] as [UInt64])
  func randomInterleavings(seed: UInt64) {
    var random = SeededGenerator(seed: seed)
    let slots = 5
    var machine = Self.machine(slots: slots, coordinators: 3)
    var toCoordinator: [[Hourglass_V1_ExecutorMessage]] = [[], [], []]
    var toExecutor: [[Hourglass_V1_CoordinatorMessage]] = [[], [], []]
    var coordinatorCredits = [0, 0, 0]
    var taken = [0, 0, 0]
    var eligible = [true, true, true]
    var connections: [UInt64] = [0, 0, 0]
    var leased = 0
    var finished = 0
    var now = 0

    func take(_ actions: [Action]) {
      for action in actions {
        switch action {
        case .connect(let connection, let coordinator):
          connections[coordinator] = connection
          toExecutor[coordinator] = [Self.registered("c\(coordinator)")]
          toCoordinator[coordinator] = []
          coordinatorCredits[coordinator] = 0
          taken[coordinator] = 0
        case .send(let message, let connection):
          guard let coordinator = connections.firstIndex(of: connection) else { continue }
          toCoordinator[coordinator].append(message)
        case .log(.error, let text, _):
          Issue.record("seed \(seed): \(text)")
        default:
          break
        }
      }
      #expect(machine.runs.count <= slots)
      #expect(machine.runs.count + machine.outstandingCredits <= slots)
    }

    func coordinatorReads(_ coordinator: Int) {
      let message = toCoordinator[coordinator].removeFirst()
      switch message.kind {
      case .credit(let grant): coordinatorCredits[coordinator] += Int(grant.credits)
      case .withdrawal(let withdrawal):
        let given = min(Int(withdrawal.credits), coordinatorCredits[coordinator])
        coordinatorCredits[coordinator] -= given
        toExecutor[coordinator].append(Self.withdrawn(UInt32(given)))
      default: break
      }
    }

    func sendTaken(_ coordinator: Int) {
      while taken[coordinator] > 0 {
        taken[coordinator] -= 1
        leased += 1
        toExecutor[coordinator].append(Self.lease("r\(leased)"))
      }
    }

    take(machine.start(now: Self.at(0)))
    for _ in 0..<4_000 {
      now += 1
      let coordinator = Int(random.next() % 3)
      switch random.next() % 9 {
      case 0, 1:
        guard !toCoordinator[coordinator].isEmpty else { continue }
        coordinatorReads(coordinator)
      case 2:
        // The coordinator takes a credit for a lease it will send later; the first is busiest.
        guard coordinatorCredits[coordinator] > 0, eligible[coordinator], coordinator == 0 || random.next() % 3 == 0 else { continue }
        coordinatorCredits[coordinator] -= 1
        taken[coordinator] += 1
      case 3:
        sendTaken(coordinator)
      case 4, 5:
        guard !toExecutor[coordinator].isEmpty else { continue }
        take(machine.received(toExecutor[coordinator].removeFirst(), on: connections[coordinator], now: Self.at(now)))
      case 6:
        guard let key = machine.runs.keys.min(by: { $0.runID < $1.runID }) else { continue }
        finished += 1
        take(machine.runFinished(key, outcome: Self.outcome(), now: Self.at(now)))
      case 7:
        // A heartbeat: sometimes the clock check flips.
        if random.next() % 8 == 0 { eligible[coordinator].toggle() }
        toExecutor[coordinator].append(.with { $0.heartbeatAck = .with { $0.eligible = eligible[coordinator] } })
        take(machine.timerFired(.heartbeat(coordinator), now: Self.at(now)))
      default:
        // Rarely, the stream ends (the coordinator forgets it) and is opened again.
        guard random.next() % 20 == 0 else { continue }
        let ended = connections[coordinator]
        toExecutor[coordinator] = []
        toCoordinator[coordinator] = []
        coordinatorCredits[coordinator] = 0
        taken[coordinator] = 0
        connections[coordinator] = 0
        take(machine.connectionEnded(ended, error: "reset", now: Self.at(now), random: 0))
        take(machine.timerFired(.reconnect(coordinator), now: Self.at(now)))
      }
    }
    // Quiesce: every taken credit becomes a lease, every message arrives.
    while toCoordinator.contains(where: { !$0.isEmpty }) || toExecutor.contains(where: { !$0.isEmpty }) || taken.contains(where: { $0 > 0 }) {
      for coordinator in 0..<3 {
        while !toCoordinator[coordinator].isEmpty { coordinatorReads(coordinator) }
        sendTaken(coordinator)
        while !toExecutor[coordinator].isEmpty {
          take(machine.received(toExecutor[coordinator].removeFirst(), on: connections[coordinator], now: Self.at(now)))
        }
      }
    }
    for coordinator in 0..<3 where machine.links[coordinator].session != nil {
      #expect(machine.links[coordinator].outstandingCredits == coordinatorCredits[coordinator], "seed \(seed), coordinator \(coordinator)")
    }
    #expect(finished > 20, "seed \(seed): the slots kept being used")
  }

  @Test("a coordinator shutting down: its stream is half-closed, its credits go to the other, its runs report through the other")
  func coordinatorShuttingDown() {
    var machine = Self.bothRegistered(slots: 4)
    _ = machine.received(Self.withdrawn(2), on: 1, now: Self.at(0))
    _ = machine.received(Self.lease("r1"), on: 1, now: Self.at(1))
    let leaving = machine.received(.with { $0.shuttingDown = .init() }, on: 1, now: Self.at(2))
    #expect(leaving.contains { if case .closeStream(1) = $0 { true } else { false } })
    #expect(leaving.contains { if case .cancelTimer(.heartbeat(0)) = $0 { true } else { false } })
    #expect(Self.credits(leaving, on: 2) == 1, "a's unused credit goes to b")
    #expect(machine.links[0].connection == 1 && !machine.links[0].isRegistered)
    #expect(machine.runs.count + machine.outstandingCredits == 4)
    // A's heartbeat timer, if it fires anyway, sends nothing.
    #expect(Self.sent(machine.timerFired(.heartbeat(0), now: Self.at(3))).isEmpty)
    let finished = machine.runFinished(RunKey(runID: "r1", fence: 1), outcome: Self.outcome(), now: Self.at(4))
    #expect(Self.results(finished, on: 2).map(\.runID) == ["r1"])
    // A ends the stream: reached again with backoff (it is restarting, say).
    let ended = machine.connectionEnded(1, error: nil, now: Self.at(5), random: 0)
    #expect(ended.contains { if case .schedule(.reconnect(0), _) = $0 { true } else { false } })
    #expect(ended.contains { if case .cancelTimer(.leaveDeadline(0)) = $0 { true } else { false } })
  }

  @Test("a coordinator that said ShuttingDown but never ends the stream is abandoned after three heartbeat intervals")
  func shuttingDownCoordinatorThatHangs() {
    var machine = Self.bothRegistered(slots: 2)
    let leaving = machine.received(.with { $0.shuttingDown = .init() }, on: 1, now: Self.at(0))
    let deadline = leaving.compactMap { if case .schedule(.leaveDeadline(0), let at) = $0 { at } else { nil } }
    #expect(deadline == [Self.at(30)], "three of its 10 s heartbeat intervals")
    let fired = machine.timerFired(.leaveDeadline(0), now: Self.at(30))
    #expect(fired.contains { if case .abandonStream(1) = $0 { true } else { false } })
    // Its end, once reported, is an ordinary one.
    #expect(
      machine.connectionEnded(1, error: "cancelled", now: Self.at(30), random: 0).contains {
        if case .schedule(.reconnect(0), _) = $0 { true } else { false }
      })
  }

  static func ack(_ runID: String, recorded: Bool = true) -> Hourglass_V1_CoordinatorMessage {
    .with {
      $0.resultAck = .with {
        $0.runID = runID; $0.fence = 1; $0.recorded = recorded
      }
    }
  }

  @Test("a result whose stream ends before the acknowledgement goes again on the other stream; the acknowledgement ends it")
  func unacknowledgedResultIsSentAgain() {
    var machine = Self.bothRegistered(slots: 4)
    _ = machine.received(Self.withdrawn(2), on: 1, now: Self.at(0))
    _ = machine.received(Self.lease("r1"), on: 1, now: Self.at(1))
    _ = machine.received(Self.lease("r2"), on: 1, now: Self.at(1))
    let key1 = RunKey(runID: "r1", fence: 1)
    let key2 = RunKey(runID: "r2", fence: 1)
    #expect(Self.results(machine.runFinished(key1, outcome: Self.outcome(), now: Self.at(2)), on: 1).map(\.runID) == ["r1"])
    #expect(Self.results(machine.runFinished(key2, outcome: Self.outcome(), now: Self.at(2)), on: 1).map(\.runID) == ["r2"])
    #expect(machine.runs.isEmpty && machine.sentResults.count == 2, "the slots are free; the results are kept")
    // r2's is acknowledged; then the stream breaks (a crash) with r1's still in flight.
    let acked = machine.received(Self.ack("r2"), on: 1, now: Self.at(3))
    #expect(acked.contains { if case .cancelTimer(.leaseExpiry(key2)) = $0 { true } else { false } })
    let ended = machine.connectionEnded(1, error: "reset", now: Self.at(4), random: 0)
    #expect(Self.results(ended, on: 2).map(\.runID) == ["r1"], "only the unacknowledged one, on b")
    #expect(machine.sentResults[key1]?.resent == true)
    #expect(machine.resentResults == 1)
    // b says it is not recorded (a's copy was): logged, and forgotten.
    let refused = machine.received(Self.ack("r1", recorded: false), on: 2, now: Self.at(5))
    #expect(refused.contains { if case .log(.info, let text, _) = $0 { text.contains("earlier copy") } else { false } })
    #expect(machine.sentResults.isEmpty)
  }

  @Test("with no stream up, an unacknowledged result waits for the first to register; past its lease it is dropped")
  func unacknowledgedResultWaitsThenExpires() {
    var machine = Self.bothRegistered(slots: 2)
    _ = machine.received(Self.withdrawn(1), on: 1, now: Self.at(0))
    _ = machine.received(Self.lease("r1"), on: 1, now: Self.at(0))
    _ = machine.received(Self.lease("r2"), on: 2, now: Self.at(0))
    _ = machine.runFinished(RunKey(runID: "r1", fence: 1), outcome: Self.outcome(), now: Self.at(1))
    _ = machine.runFinished(RunKey(runID: "r2", fence: 1), outcome: Self.outcome(), now: Self.at(1))
    _ = machine.connectionEnded(1, error: "reset", now: Self.at(2), random: 0)
    let bothDown = machine.connectionEnded(2, error: "reset", now: Self.at(2), random: 0)
    #expect(Self.sent(bothDown).isEmpty)
    #expect(machine.sentResults.values.allSatisfy { $0.connection == nil })
    // a comes back on stream 3: both results go there, before its credits.
    let reconnect = machine.timerFired(.reconnect(0), now: Self.at(3))
    let stream = reconnect.compactMap { if case .connect(let connection, _) = $0 { connection } else { nil } }.first!
    let registered = machine.received(Self.registered("a"), on: stream, now: Self.at(3))
    #expect(Self.results(registered, on: stream).map(\.runID).sorted() == ["r1", "r2"])
    #expect(machine.resentResults == 3, "r1 went again on b, then both on a's new stream")
    // r2's acknowledgement never comes and its lease (30 s from its grant) runs out.
    _ = machine.received(Self.ack("r1"), on: stream, now: Self.at(4))
    #expect(
      machine.timerFired(.leaseExpiry(RunKey(runID: "r2", fence: 1)), now: Self.at(31)).contains {
        if case .log(.warning, _, _) = $0 { true } else { false }
      })
    #expect(machine.sentResults.isEmpty)
  }
}
