import Foundation
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

  static func withdrawals(_ actions: [Action]) -> [(UInt64, UInt32)] {
    sent(actions).compactMap { entry in
      if case .withdrawal(let withdrawal)? = entry.1 { return (entry.0, withdrawal.credits) }
      return nil
    }
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
    var machine = Self.machine(slots: 4, coordinators: 2)
    _ = machine.start(now: Self.at(0))
    _ = machine.received(Self.registered("a"), on: 1, now: Self.at(0))
    _ = machine.received(Self.registered("b"), on: 2, now: Self.at(0))
    _ = machine.received(Self.withdrawn(2), on: 1, now: Self.at(0))
    #expect(machine.links.map(\.outstandingCredits) == [2, 2])
    _ = machine.received(Self.lease("r1"), on: 2, now: Self.at(1))
    let last = machine.received(Self.lease("r2"), on: 2, now: Self.at(1))
    #expect(Self.withdrawals(last).map(\.0) == [1] && Self.withdrawals(last).map(\.1) == [1])
    let answer = machine.received(Self.withdrawn(1), on: 1, now: Self.at(2))
    #expect(Self.credits(answer, on: 2) == 1)
    #expect(machine.links.map(\.outstandingCredits) == [1, 1])
  }

  @Test("a freed slot goes to the coordinator with the fewest credits, ties to the one that leased last")
  func freedSlotGoesWhereNeeded() {
    var machine = Self.machine(slots: 2, coordinators: 2)
    _ = machine.start(now: Self.at(0))
    _ = machine.received(Self.registered("a", withdrawals: false), on: 1, now: Self.at(0))
    _ = machine.received(Self.registered("b", withdrawals: false), on: 2, now: Self.at(0))
    #expect(machine.links.map(\.outstandingCredits) == [2, 0], "a coordinator without withdrawals keeps what it holds")
    _ = machine.received(Self.lease("r1"), on: 1, now: Self.at(1))
    _ = machine.received(Self.lease("r2"), on: 1, now: Self.at(2))
    // Both at zero credits: the slot goes to a, which leased last.
    let freed = machine.runFinished(RunKey(runID: "r1", fence: 1), outcome: Self.outcome(), now: Self.at(3))
    #expect(Self.credits(freed, on: 1) == 1 && Self.credits(freed, on: 2) == 0)
    // Now a holds one and b none: the next goes to b.
    let next = machine.runFinished(RunKey(runID: "r2", fence: 1), outcome: Self.outcome(), now: Self.at(4))
    #expect(Self.credits(next, on: 2) == 1)
  }

  @Test("renewals and the result of a lease go to the coordinator that granted it")
  func leaseStaysOnItsStream() {
    var machine = Self.machine(slots: 2, coordinators: 2)
    _ = machine.start(now: Self.at(0))
    _ = machine.received(Self.registered("a"), on: 1, now: Self.at(0))
    _ = machine.received(Self.registered("b"), on: 2, now: Self.at(0))
    _ = machine.received(Self.withdrawn(1), on: 1, now: Self.at(0))
    _ = machine.received(Self.lease("r1"), on: 2, now: Self.at(0))
    let key = RunKey(runID: "r1", fence: 1)
    let renewal = Self.sent(machine.timerFired(.renewal(key), now: Self.at(10)))
    #expect(renewal.count == 1 && renewal[0].0 == 2)
    let finished = Self.sent(machine.runFinished(key, outcome: Self.outcome(), now: Self.at(11)))
    #expect(finished.contains { $0.0 == 2 && { if case .result? = $0.1 { true } else { false } }($0) })
  }

  @Test("when one stream ends, its credits go to the others while it reconnects")
  func creditsMoveWhenAStreamEnds() {
    var machine = Self.machine(slots: 4, coordinators: 2)
    _ = machine.start(now: Self.at(0))
    _ = machine.received(Self.registered("a"), on: 1, now: Self.at(0))
    _ = machine.received(Self.registered("b"), on: 2, now: Self.at(0))
    _ = machine.received(Self.withdrawn(2), on: 1, now: Self.at(0))
    let ended = machine.connectionEnded(1, error: "reset", now: Self.at(1), random: 0)
    #expect(Self.credits(ended, on: 2) == 2)
    #expect(ended.contains { if case .schedule(.reconnect(0), _) = $0 { true } else { false } })
    #expect(machine.links.map(\.outstandingCredits) == [0, 4])
    #expect(machine.connectedCount == 1)
  }

  @Test("drain: Draining goes to every coordinator, every stream closes, and the executor stops once all have ended")
  func drainsEveryStream() {
    var machine = Self.machine(slots: 2, coordinators: 2)
    _ = machine.start(now: Self.at(0))
    _ = machine.received(Self.registered("a"), on: 1, now: Self.at(0))
    _ = machine.received(Self.registered("b"), on: 2, now: Self.at(0))
    _ = machine.received(Self.lease("r1"), on: 1, now: Self.at(0))
    let shutdown = machine.shutdown(now: Self.at(1))
    #expect(Self.sent(shutdown).map(\.0).sorted() == [1, 2])
    let finished = machine.runFinished(RunKey(runID: "r1", fence: 1), outcome: Self.outcome(), now: Self.at(2))
    let closed = finished.compactMap { if case .closeStream(let connection) = $0 { return connection } else { return nil } }
    #expect(closed.sorted() == [1, 2])
    #expect(Self.credits(finished, on: 1) == 0 && Self.credits(finished, on: 2) == 0)
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
    let finished = machine.runFinished(RunKey(runID: "r1", fence: 1), outcome: Self.outcome(), now: Self.at(2))
    #expect(finished.contains { if case .closeStream(1) = $0 { true } else { false } })
    #expect(machine.connectionEnded(1, error: nil, now: Self.at(3), random: 0).contains { if case .finish = $0 { true } else { false } })
  }

  /// Coordinators that take credits, withdraw and push leases as the protocol says, with every
  /// message in flight on FIFO streams, driven in a random order: the executor never receives a
  /// lease it has no credit for, never runs more than its slots, and the credits the
  /// coordinators hold and the runs never exceed the slots.
  @Test("random interleavings with three coordinators never exceed the slots", arguments: [1, 2, 3, 4, 5, 6, 7, 8] as [UInt64])
  func randomInterleavings(seed: UInt64) {
    var random = SplitMix(seed: seed)
    let slots = 5
    var machine = Self.machine(slots: slots, coordinators: 3)
    var toCoordinator: [[Hourglass_V1_ExecutorMessage]] = [[], [], []]
    var toExecutor: [[Hourglass_V1_CoordinatorMessage]] = [[], [], []]
    var coordinatorCredits = [0, 0, 0]
    var connections: [UInt64] = [0, 0, 0]
    var leased = 0
    var finished = 0

    func take(_ actions: [Action]) {
      for action in actions {
        switch action {
        case .connect(let connection, let coordinator):
          connections[coordinator] = connection
          toExecutor[coordinator].append(Self.registered("c\(coordinator)"))
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

    take(machine.start(now: Self.at(0)))
    for step in 0..<3_000 {
      let coordinator = Int(random.next() % 3)
      switch random.next() % 4 {
      case 0:
        // The coordinator reads one message.
        guard !toCoordinator[coordinator].isEmpty else { continue }
        let message = toCoordinator[coordinator].removeFirst()
        switch message.kind {
        case .credit(let grant): coordinatorCredits[coordinator] += Int(grant.credits)
        case .withdrawal(let withdrawal):
          let given = min(Int(withdrawal.credits), coordinatorCredits[coordinator])
          coordinatorCredits[coordinator] -= given
          toExecutor[coordinator].append(Self.withdrawn(UInt32(given)))
        default: break
        }
      case 1:
        // The coordinator pushes a lease if it holds a credit (the first coordinator is busier).
        guard coordinatorCredits[coordinator] > 0, coordinator == 0 || random.next() % 3 == 0 else { continue }
        coordinatorCredits[coordinator] -= 1
        leased += 1
        toExecutor[coordinator].append(Self.lease("r\(leased)"))
      case 2:
        // The executor reads one message.
        guard !toExecutor[coordinator].isEmpty else { continue }
        take(machine.received(toExecutor[coordinator].removeFirst(), on: connections[coordinator], now: Self.at(step)))
      default:
        // A run finishes.
        guard let key = machine.runs.keys.min(by: { $0.runID < $1.runID }) else { continue }
        finished += 1
        take(machine.runFinished(key, outcome: Self.outcome(), now: Self.at(step)))
      }
    }
    #expect(finished > 100, "seed \(seed): the slots kept being used")
  }
}

/// A small deterministic generator for the interleaving test.
struct SplitMix: RandomNumberGenerator {
  var state: UInt64
  init(seed: UInt64) { state = seed }
  mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
}
