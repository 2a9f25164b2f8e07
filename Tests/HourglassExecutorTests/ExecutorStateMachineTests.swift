import Foundation
import HourglassProto
import Testing

@testable import HourglassExecutor

/// The bookkeeping without I/O: leases, slots, credits and self-fencing decisions.
@Suite("executor state machine")
struct ExecutorStateMachineTests {
  typealias Machine = ExecutorStateMachine<ManualClock.Instant>
  typealias Action = Machine.Action

  static func at(_ seconds: Int) -> ManualClock.Instant { ManualClock.Instant(offset: .seconds(seconds)) }

  static func machine(slots: Int = 2) -> Machine {
    Machine(
      settings: .init(
        executorID: "e1", slots: slots, operators: ["exec", "noop"], version: "test", heartbeatInterval: .seconds(10),
        leaseDurationFallback: .seconds(30), backoff: .init(initial: .seconds(1), maximum: .seconds(8), multiplier: 2, jitter: 0),
        drainGrace: .seconds(60), closeTimeout: .seconds(5)))
  }

  static func registered(leaseDuration: Int64 = 30) -> Hourglass_V1_CoordinatorMessage {
    .with {
      $0.registered = .with {
        $0.coordinatorID = "c1"; $0.leaseDuration.seconds = leaseDuration
      }
    }
  }

  static func lease(_ runID: String, fence: UInt64 = 1, leaseDuration: Int64 = 30, timeout: Int64 = 0) -> Hourglass_V1_CoordinatorMessage {
    .with {
      $0.lease = .with {
        $0.runID = runID
        $0.fence = fence
        $0.operator = "noop"
        $0.leaseDuration.seconds = leaseDuration
        if timeout > 0 { $0.timeout.seconds = timeout }
      }
    }
  }

  /// A RenewalAck that renews run `runID` (fence 1), with a lease of `leaseNanos` nanoseconds
  /// when given (else none: the run keeps its lease duration).
  static func renewed(_ runID: String, leaseNanos: Int32? = nil) -> Hourglass_V1_CoordinatorMessage {
    .with {
      $0.renewalAck = .with {
        $0.runID = runID; $0.fence = 1; $0.renewed = true
        if let leaseNanos { $0.leaseDuration.nanos = leaseNanos }
      }
    }
  }

  static func sent(_ actions: [Action]) -> [Hourglass_V1_ExecutorMessage.OneOf_Kind] {
    actions.compactMap { if case .send(let message, _) = $0 { return message.kind } else { return nil } }
  }

  static func stops(_ actions: [Action]) -> [RunStopReason] {
    actions.compactMap { if case .stopRun(_, let reason) = $0 { return reason } else { return nil } }
  }

  static func outcome(_ status: RunOutcome.Status) -> RunOutcome {
    RunOutcome(status: status, started: Date(), finished: Date())
  }

  /// A connected machine running lease "a" (fence 1, granted at 0 s), whose first renewal
  /// went out at 10 s and is not acknowledged yet.
  static func renewing() -> Machine {
    var machine = connected()
    _ = machine.received(lease("a"), on: 1, now: at(0))
    _ = machine.timerFired(.renewal(RunKey(runID: "a", fence: 1)), now: at(10))
    return machine
  }

  /// A machine registered on connection 1 with all its credits granted.
  static func connected(slots: Int = 2) -> Machine {
    var machine = machine(slots: slots)
    _ = machine.start(now: at(0))
    _ = machine.received(registered(), on: 1, now: at(0))
    return machine
  }

  @Test("starting opens a stream whose first message is Register; Registered brings one credit per slot")
  func registers() {
    var machine = Self.machine(slots: 3)
    let start = machine.start(now: Self.at(0))
    guard case .connect(let connection, _) = start.first else { Issue.record("no connect: \(start)"); return }
    #expect(
      Self.sent(start) == [
        .register(
          .with {
            $0.executorID = "e1"; $0.operators = ["exec", "noop"]; $0.slots = 3; $0.version = "test"; $0.batches = true
          })
      ])
    let actions = machine.received(Self.registered(), on: connection, now: Self.at(0))
    #expect(Self.sent(actions) == [.credit(.with { $0.credits = 3 })])
  }

  @Test("a lease beyond the granted credits is refused")
  func noLeaseWithoutCredit() {
    var machine = Self.connected(slots: 1)
    let first = machine.received(Self.lease("a"), on: 1, now: Self.at(0))
    #expect(first.contains(where: Self.isStartRun))
    let second = machine.received(Self.lease("b"), on: 1, now: Self.at(0))
    #expect(!second.contains(where: Self.isStartRun))
    #expect(machine.runs.count == 1)
  }

  @Test("a LeaseGrantBatch starts each grant as its own LeaseGrant would, credits counted per grant")
  func leaseBatch() {
    var machine = Self.connected(slots: 2)
    let batch = Hourglass_V1_CoordinatorMessage.with {
      $0.leases = .with { $0.grants = ["a", "b", "c"].map { Self.lease($0).lease } }
    }
    let actions = machine.received(batch, on: 1, now: Self.at(0))
    let started = actions.compactMap { if case .startRun(let key, _) = $0 { return key.runID } else { return nil } }
    #expect(started == ["a", "b"], "two credits: the third grant is refused")
    #expect(machine.runs.count == 2)
    #expect(machine.outstandingCredits == 0)
  }

  @Test("ResultAckBatch: a refused result is logged as a single ResultAck would be")
  func resultAckBatch() {
    var machine = Self.connected()
    let acks = Hourglass_V1_CoordinatorMessage.with {
      $0.resultAcks = .with {
        $0.acks = [
          .with {
            $0.runID = "a"; $0.recorded = true
          },
          .with {
            $0.runID = "b"; $0.recorded = false
          },
        ]
      }
    }
    let actions = machine.received(acks, on: 1, now: Self.at(0))
    #expect(actions.count == 1)
    guard case .log(.info, _, let run)? = actions.first else { Issue.record("no log: \(actions)"); return }
    #expect(run?.runID == "b")
  }

  @Test("Registered.batches says whether the coordinator takes result batches")
  func coordinatorBatches() {
    var machine = Self.machine()
    _ = machine.start(now: Self.at(0))
    #expect(!machine.takesBatches(on: 1))
    var registered = Self.registered()
    registered.registered.batches = true
    _ = machine.received(registered, on: 1, now: Self.at(0))
    #expect(machine.takesBatches(on: 1))
  }

  @Test("the lease's expiry counts from the renewal's sending, not from its acknowledgement")
  func renewalCountsFromSending() {
    var machine = Self.connected()
    _ = machine.received(Self.lease("a"), on: 1, now: Self.at(0))
    let key = RunKey(runID: "a", fence: 1)
    let renew = machine.timerFired(.renewal(key), now: Self.at(10))
    #expect(
      Self.sent(renew) == [
        .renewal(
          .with {
            $0.runID = "a"; $0.fence = 1
          })
      ])
    let ack = machine.received(Self.renewed("a"), on: 1, now: Self.at(15))
    #expect(machine.runs[key]?.leaseExpiry == Self.at(40))
    #expect(ack.contains { if case .schedule(.leaseExpiry(key), Self.at(40)) = $0 { true } else { false } })
  }

  @Test("slow acknowledgements: each counts the lease from its own renewal's sending, not from a later renewal's")
  func lateAcknowledgementsCountFromTheirOwnRenewal() {
    var machine = Self.renewing()  // R1 sent at 10 s.
    let key = RunKey(runID: "a", fence: 1)
    _ = machine.timerFired(.renewal(key), now: Self.at(20))  // R2
    _ = machine.received(Self.renewed("a"), on: 1, now: Self.at(25))  // for R1
    #expect(machine.runs[key]?.leaseExpiry == Self.at(40))
    _ = machine.timerFired(.renewal(key), now: Self.at(30))  // R3
    // The coordinator counted R2's lease from when it read R2 (after 20 s): crediting R3's
    // sending (30 s) would let the run go on 10 s past the lease another coordinator sees.
    _ = machine.received(Self.renewed("a"), on: 1, now: Self.at(32))  // for R2
    #expect(machine.runs[key]?.leaseExpiry == Self.at(50))
    _ = machine.received(Self.renewed("a"), on: 1, now: Self.at(35))  // for R3
    #expect(machine.runs[key]?.leaseExpiry == Self.at(60))
    _ = machine.received(Self.renewed("a"), on: 1, now: Self.at(36))
    #expect(machine.runs[key]?.leaseExpiry == Self.at(60), "an acknowledgement with no renewal in flight extends nothing")
  }

  @Test("renewals sent on a stream that ended are not taken for those acknowledged on the next one")
  func renewalsOfAnEndedStreamAreForgotten() {
    var machine = Self.renewing()  // R1 sent at 10 s on connection 1, never answered.
    let key = RunKey(runID: "a", fence: 1)
    _ = machine.connectionEnded(1, error: "gone", now: Self.at(11), random: 0)
    guard case .connect(let connection, _) = machine.timerFired(.reconnect(0), now: Self.at(12)).first else {
      Issue.record("no reconnection")
      return
    }
    #expect(
      Self.sent(machine.received(Self.registered(), on: connection, now: Self.at(13))).contains(
        .renewal(
          .with {
            $0.runID = "a"; $0.fence = 1
          })))
    #expect(machine.runs[key]?.renewalsInFlight == [.init(connection: connection, sentAt: Self.at(13))])
    _ = machine.received(Self.renewed("a"), on: connection, now: Self.at(14))
    #expect(machine.runs[key]?.leaseExpiry == Self.at(43))
  }

  @Test("at most eight renewals of a run await acknowledgement; the next waits for one to be answered")
  func renewalsInFlightAreBounded() {
    var machine = Self.renewing()
    let key = RunKey(runID: "a", fence: 1)
    for second in [11, 12, 13, 14, 15, 16, 17] {
      #expect(Self.sent(machine.timerFired(.renewal(key), now: Self.at(second))).count == 1)
    }
    #expect(machine.runs[key]?.renewalsInFlight.count == Machine.maxRenewalsInFlight)
    #expect(Self.sent(machine.timerFired(.renewal(key), now: Self.at(18))).isEmpty)
    _ = machine.received(Self.renewed("a"), on: 1, now: Self.at(19))
    #expect(machine.runs[key]?.leaseExpiry == Self.at(40), "the oldest, sent at 10 s")
    #expect(Self.sent(machine.timerFired(.renewal(key), now: Self.at(20))).count == 1)
  }

  @Test("a renewal acknowledged with a lease of nanoseconds is renewed again after a millisecond, not at once; its expiry stays")
  func tinyRenewedLease() {
    var machine = Self.renewing()
    let key = RunKey(runID: "a", fence: 1)
    _ = machine.received(Self.renewed("a", leaseNanos: 3), on: 1, now: Self.at(11))
    #expect(machine.runs[key]?.leaseExpiry == Self.at(30), "a shorter lease does not move the expiry earlier or later")
    let next = machine.timerFired(.renewal(key), now: Self.at(12))
    #expect(next.contains { if case .schedule(.renewal(key), let at) = $0 { at == Self.at(12).advanced(by: .milliseconds(1)) } else { false } })
  }

  @Test("self-fencing: at the lease's expiry without an acknowledged renewal the run is stopped and its result dropped")
  func selfFencing() {
    var machine = Self.renewing()
    let key = RunKey(runID: "a", fence: 1)
    #expect(Self.stops(machine.timerFired(.leaseExpiry(key), now: Self.at(30))) == [.leaseExpired])
    let finished = machine.runFinished(key, outcome: Self.outcome(.cancelled), now: Self.at(31))
    #expect(Self.sent(finished) == [.credit(.with { $0.credits = 1 })], "no RunResult, only the slot back")
  }

  @Test("a stale expiry timer (the lease was renewed since) re-arms instead of fencing")
  func staleExpiryTimer() {
    var machine = Self.renewing()
    let key = RunKey(runID: "a", fence: 1)
    _ = machine.received(Self.renewed("a"), on: 1, now: Self.at(11))
    let actions = machine.timerFired(.leaseExpiry(key), now: Self.at(30))
    #expect(Self.stops(actions).isEmpty)
    #expect(actions.contains { if case .schedule(.leaseExpiry(key), Self.at(40)) = $0 { true } else { false } })
  }

  @Test("a run that finishes while disconnected is reported on reconnection if its lease still holds, before the credits")
  func resultWaitsForReconnection() {
    var machine = Self.connected()
    _ = machine.received(Self.lease("a"), on: 1, now: Self.at(0))
    let key = RunKey(runID: "a", fence: 1)
    _ = machine.connectionEnded(1, error: "gone", now: Self.at(1), random: 0)
    #expect(Self.sent(machine.runFinished(key, outcome: Self.outcome(.succeeded), now: Self.at(2))).isEmpty)
    let reconnect = machine.timerFired(.reconnect(0), now: Self.at(2))
    guard case .connect(let connection, _) = reconnect.first else { Issue.record("no reconnect: \(reconnect)"); return }
    let sent = Self.sent(machine.received(Self.registered(), on: connection, now: Self.at(3)))
    #expect(sent.count == 2)
    if case .result(let result)? = sent.first {
      #expect(result.runID == "a" && result.outcome == .succeeded)
    } else {
      Issue.record("expected the result first: \(sent)")
    }
    #expect(sent.last == .credit(.with { $0.credits = 2 }))
  }

  @Test("a result waiting for a connection is dropped when the lease runs out")
  func waitingResultDroppedAtExpiry() {
    var machine = Self.connected()
    _ = machine.received(Self.lease("a"), on: 1, now: Self.at(0))
    let key = RunKey(runID: "a", fence: 1)
    _ = machine.connectionEnded(1, error: nil, now: Self.at(1), random: 0)
    _ = machine.runFinished(key, outcome: Self.outcome(.succeeded), now: Self.at(2))
    _ = machine.timerFired(.leaseExpiry(key), now: Self.at(30))
    #expect(machine.runs.isEmpty)
  }

  @Test("renewals go out every lease/3 only while connected, and resume on the new stream")
  func renewalsWhileDisconnected() {
    var machine = Self.connected()
    _ = machine.received(Self.lease("a"), on: 1, now: Self.at(0))
    let key = RunKey(runID: "a", fence: 1)
    _ = machine.connectionEnded(1, error: nil, now: Self.at(1), random: 0)
    let offline = machine.timerFired(.renewal(key), now: Self.at(10))
    #expect(Self.sent(offline).isEmpty)
    #expect(offline.contains { if case .schedule(.renewal(key), Self.at(20)) = $0 { true } else { false } })
    let reconnect = machine.timerFired(.reconnect(0), now: Self.at(11))
    guard case .connect(let connection, _) = reconnect.first else { return }
    let sent = Self.sent(machine.received(Self.registered(), on: connection, now: Self.at(12)))
    #expect(
      sent.first
        == .renewal(
          .with {
            $0.runID = "a"; $0.fence = 1
          }))
    #expect(sent.last == .credit(.with { $0.credits = 1 }))
  }

  @Test("reconnection backs off exponentially up to the maximum, and resets after Registered")
  func backoff() {
    var machine = Self.machine()
    _ = machine.start(now: Self.at(0))
    var delays: [Duration] = []
    var connection: UInt64 = 1
    for _ in 0..<6 {
      let actions = machine.connectionEnded(connection, error: "refused", now: Self.at(0), random: 0)
      for case .schedule(.reconnect(0), let at) in actions { delays.append(Self.at(0).duration(to: at)) }
      guard case .connect(let next, _) = machine.timerFired(.reconnect(0), now: Self.at(0)).first else { return }
      connection = next
    }
    #expect(delays == [.seconds(1), .seconds(2), .seconds(4), .seconds(8), .seconds(8), .seconds(8)])
    _ = machine.received(Self.registered(), on: connection, now: Self.at(0))
    let after = machine.connectionEnded(connection, error: nil, now: Self.at(0), random: 0)
    #expect(after.contains { if case .schedule(.reconnect(0), Self.at(1)) = $0 { true } else { false } })
  }

  /// A ResultAck for run `runID` (fence 1), recorded.
  static func acknowledged(_ runID: String) -> Hourglass_V1_CoordinatorMessage {
    .with {
      $0.resultAck = .with {
        $0.runID = runID; $0.fence = 1; $0.recorded = true
      }
    }
  }

  static func closes(_ actions: [Action]) -> Bool {
    actions.contains { if case .closeStream = $0 { true } else { false } }
  }

  /// A connected machine that ran lease "a" (from 0 s), was shut down at 1 s, and sent the
  /// run's result at 2 s, not acknowledged yet.
  static func drainedWithResultSent() -> Machine {
    var machine = connected()
    _ = machine.received(lease("a"), on: 1, now: at(0))
    _ = machine.shutdown(now: at(1))
    _ = machine.runFinished(RunKey(runID: "a", fence: 1), outcome: outcome(.succeeded), now: at(2))
    return machine
  }

  static func isFinish(_ action: Action) -> Bool { if case .finish = action { true } else { false } }

  static func isStartRun(_ action: Action) -> Bool { if case .startRun = action { true } else { false } }

  @Test("drain: Draining is sent, freed slots grant no credit, the stream closes once the last result is acknowledged")
  func drain() {
    var machine = Self.connected()
    _ = machine.received(Self.lease("a"), on: 1, now: Self.at(0))
    let shutdown = machine.shutdown(now: Self.at(1))
    #expect(Self.sent(shutdown) == [.draining(.with { $0.grace.seconds = 60 })])
    let finished = machine.runFinished(RunKey(runID: "a", fence: 1), outcome: Self.outcome(.succeeded), now: Self.at(2))
    #expect(Self.sent(finished).count == 1, "the result, and no credit")
    #expect(!Self.closes(finished), "the result is not acknowledged yet")
    #expect(Self.closes(machine.received(Self.acknowledged("a"), on: 1, now: Self.at(3))))
    #expect(machine.connectionEnded(1, error: nil, now: Self.at(4), random: 0).contains(where: Self.isFinish))
  }

  @Test("drain: a result whose stream breaks before its ResultAck goes again on the next stream, and only then does the drain end")
  func drainKeepsUnacknowledgedResults() {
    var machine = Self.drainedWithResultSent()
    let ended = machine.connectionEnded(1, error: "reset", now: Self.at(3), random: 0)
    #expect(!ended.contains(where: Self.isFinish))
    guard case .connect(let connection, _) = machine.timerFired(.reconnect(0), now: Self.at(4)).first else {
      Issue.record("no reconnection to deliver the result: \(ended)")
      return
    }
    let registered = Self.sent(machine.received(Self.registered(), on: connection, now: Self.at(5)))
    guard case .result(let result)? = registered.first else { Issue.record("the result was not sent again: \(registered)"); return }
    #expect(result.runID == "a")
    #expect(registered.contains(.draining(.with { $0.grace.seconds = 56 })))
    #expect(Self.closes(machine.received(Self.acknowledged("a"), on: connection, now: Self.at(6))))
  }

  @Test("drain: a result never acknowledged holds the drain only until its lease runs out")
  func drainGivesUpOnResultsAtTheirLease() {
    var machine = Self.drainedWithResultSent()
    #expect(Self.closes(machine.timerFired(.leaseExpiry(RunKey(runID: "a", fence: 1)), now: Self.at(30))))
  }

  @Test("drain: when the grace runs out, running runs are stopped and reported FAILED")
  func drainGraceRunsOut() {
    var machine = Self.connected()
    _ = machine.received(Self.lease("a"), on: 1, now: Self.at(0))
    _ = machine.shutdown(now: Self.at(1))
    #expect(Self.stops(machine.timerFired(.drainDeadline, now: Self.at(61))) == [.drainGraceExpired])
    let sent = Self.sent(machine.runFinished(RunKey(runID: "a", fence: 1), outcome: Self.outcome(.cancelled), now: Self.at(62)))
    guard case .result(let result)? = sent.first else { Issue.record("no result: \(sent)"); return }
    #expect(result.outcome == .failed)
  }

  @Test("drain: a lease that arrives after the grace ran out is not started, and reported FAILED at once")
  func leaseAfterTheGrace() {
    var machine = Self.connected()
    _ = machine.received(Self.lease("a"), on: 1, now: Self.at(0))
    _ = machine.shutdown(now: Self.at(1))
    _ = machine.timerFired(.drainDeadline, now: Self.at(61))
    let late = machine.received(Self.lease("b"), on: 1, now: Self.at(61))
    #expect(!late.contains(where: Self.isStartRun))
    guard case .result(let result)? = Self.sent(late).first else { Issue.record("no result: \(late)"); return }
    #expect(result.runID == "b" && result.outcome == .failed && result.exitCode == ExecOperator.notStartedExitCode)
    #expect(machine.runs[RunKey(runID: "b", fence: 1)] == nil)
  }

  @Test("drain: a lease that arrives once the streams are closing is not started (it would be killed with the stream)")
  func leaseWhileClosing() {
    var machine = Self.connected()
    _ = machine.shutdown(now: Self.at(1))  // No run: the stream closes at once.
    #expect(machine.lifecycle == .closing)
    let late = machine.received(Self.lease("a"), on: 1, now: Self.at(2))
    #expect(!late.contains(where: Self.isStartRun))
    #expect(Self.sent(late).isEmpty)
    #expect(machine.runs.isEmpty)
    #expect(machine.connectionEnded(1, error: nil, now: Self.at(3), random: 0).contains(where: Self.isFinish))
  }

  @Test("drain: a lease that arrives during the grace runs (the coordinator sent it before it read Draining)")
  func leaseDuringTheGrace() {
    var machine = Self.connected()
    _ = machine.received(Self.lease("a"), on: 1, now: Self.at(0))
    _ = machine.shutdown(now: Self.at(1))
    #expect(machine.received(Self.lease("b"), on: 1, now: Self.at(2)).contains(where: Self.isStartRun))
  }

  @Test("CancelRun for an unknown fence is ignored; for the right one it stops the run")
  func cancelMatchesFence() {
    var machine = Self.connected()
    _ = machine.received(Self.lease("a", fence: 5), on: 1, now: Self.at(0))
    #expect(
      Self.stops(
        machine.received(
          .with {
            $0.cancel = .with {
              $0.runID = "a"; $0.fence = 4
            }
          }, on: 1, now: Self.at(1))
      ).isEmpty)
    #expect(
      Self.stops(
        machine.received(
          .with {
            $0.cancel = .with {
              $0.runID = "a"; $0.fence = 5; $0.reason = "x"
            }
          }, on: 1, now: Self.at(1))) == [.cancelled(reason: "x")])
  }

  @Test("messages from a stream that has been replaced are ignored")
  func staleConnection() {
    var machine = Self.connected()
    _ = machine.connectionEnded(1, error: nil, now: Self.at(0), random: 0)
    _ = machine.timerFired(.reconnect(0), now: Self.at(1))
    #expect(machine.received(Self.lease("a"), on: 1, now: Self.at(2)).isEmpty)
  }

  @Test("each heartbeat carries the previous one's round trip by the monotonic clock")
  func heartbeatRoundTrip() {
    var machine = Self.connected()
    let first = machine.timerFired(.heartbeat(0), now: Self.at(10))
    guard case .sendHeartbeat(1, 1, 2, 0, 0)? = first.first else { Issue.record("unexpected: \(first)"); return }
    let half = ManualClock.Instant(offset: .milliseconds(10_500))
    _ = machine.received(
      .with {
        $0.heartbeatAck = .with {
          $0.sequence = 1; $0.eligible = true
        }
      }, on: 1, now: half)
    let second = machine.timerFired(.heartbeat(0), now: Self.at(20))
    guard case .sendHeartbeat(1, 2, _, _, let roundTrip)? = second.first else { Issue.record("unexpected: \(second)"); return }
    #expect(roundTrip == 500_000)
  }

  @Test("a stream's first heartbeat found outside the skew bound is sent again at once, with its round trip; later ones wait their interval")
  func firstMeasurementRepeated() {
    func ack(_ sequence: UInt64, eligible: Bool) -> Hourglass_V1_CoordinatorMessage {
      .with {
        $0.heartbeatAck = .with {
          $0.sequence = sequence; $0.eligible = eligible; $0.measuredSkewMicros = eligible ? 0 : -900_000
        }
      }
    }
    func remeasures(_ actions: [Action], at instant: ManualClock.Instant) -> Bool {
      actions.contains { if case .schedule(.heartbeat(0), let at) = $0 { at == instant } else { false } }
    }
    var machine = Self.connected()
    _ = machine.timerFired(.heartbeat(0), now: Self.at(0))
    let afterFirst = machine.received(ack(1, eligible: false), on: 1, now: Self.at(1))
    #expect(remeasures(afterFirst, at: Self.at(1)))
    let second = machine.timerFired(.heartbeat(0), now: Self.at(1))
    guard case .sendHeartbeat(1, 2, _, _, let roundTrip)? = second.first else { Issue.record("unexpected: \(second)"); return }
    #expect(roundTrip == 1_000_000)
    // Outside again with the round trip known: the next measurement waits for the interval.
    #expect(!remeasures(machine.received(ack(2, eligible: false), on: 1, now: Self.at(2)), at: Self.at(2)))

    var inside = Self.connected()
    _ = inside.timerFired(.heartbeat(0), now: Self.at(0))
    #expect(!remeasures(inside.received(ack(1, eligible: true), on: 1, now: Self.at(1)), at: Self.at(1)))
  }

  @Test("a coordinator's heartbeat interval of a nanosecond is taken as 100 ms, not a busy loop")
  func heartbeatIntervalFloor() {
    var machine = Self.machine()
    _ = machine.start(now: Self.at(0))
    _ = machine.received(
      .with {
        $0.registered = .with {
          $0.coordinatorID = "c1"; $0.heartbeatInterval.nanos = 1
        }
      }, on: 1, now: Self.at(0))
    let actions = machine.timerFired(.heartbeat(0), now: Self.at(1))
    #expect(actions.contains { if case .schedule(.heartbeat(0), let at) = $0 { at == Self.at(1).advanced(by: .milliseconds(100)) } else { false } })
  }

  @Test("a coordinator that stops acknowledging heartbeats for three intervals loses the stream")
  func heartbeatsUnanswered() {
    var machine = Self.connected()
    for second in [10, 20, 30] {
      let actions = machine.timerFired(.heartbeat(0), now: Self.at(second))
      #expect(!actions.contains { if case .abandonStream = $0 { true } else { false } })
      if second == 20 {
        // An acknowledgement of the first heartbeat keeps the stream; the count starts again.
        _ = machine.received(
          .with {
            $0.heartbeatAck = .with {
              $0.sequence = 1; $0.eligible = true
            }
          }, on: 1, now: Self.at(21))
      }
    }
    #expect(!machine.timerFired(.heartbeat(0), now: Self.at(40)).contains { if case .abandonStream = $0 { true } else { false } })
    #expect(machine.timerFired(.heartbeat(0), now: Self.at(50)).contains { if case .abandonStream = $0 { true } else { false } })
  }

  @Test("a lease for an operator that was not registered is answered FAILED at once, and its credit returned")
  func unknownOperator() {
    var machine = Self.connected(slots: 1)
    var grant = Self.lease("a")
    grant.lease.operator = "docker"
    let actions = machine.received(grant, on: 1, now: Self.at(0))
    #expect(!actions.contains(where: Self.isStartRun))
    let sent = Self.sent(actions)
    guard case .result(let result)? = sent.first else { Issue.record("no result: \(sent)"); return }
    #expect(result.outcome == .failed)
    #expect(sent.last == .credit(.with { $0.credits = 1 }))
  }

  @Test(
    "configuration errors name the field",
    arguments: ["executorID", "slots", "operators", "reconnectBackoff.maximum", "temporaryDirectory", "exec.openFileLimit"])
  func configurationValidation(field: String) {
    var configuration = ExecutorConfiguration.defaults
    #expect(throws: Never.self) { try configuration.validate() }
    switch field {
    case "executorID": configuration.executorID = ""
    case "slots": configuration.slots = 0
    case "operators": configuration.operators = []
    case "reconnectBackoff.maximum": configuration.reconnectBackoff.maximum = .milliseconds(1)
    case "temporaryDirectory": configuration.temporaryDirectory = "tmp"
    default: configuration.exec.openFileLimit = 0
    }
    #expect(throws: ExecutorConfigurationError.self) { try configuration.validate() }
    do {
      try configuration.validate()
    } catch {
      #expect(error.field == field)
    }
  }

  @Test("running exec tasks as another user needs root and the privilege tool; without exec, neither is checked")
  func runAsValidation() {
    var configuration = ExecutorConfiguration.defaults
    configuration.exec.runAs = ExecOperator.RunAs(name: "nobody", uid: 65_534, gid: 65_534)
    #expect(throws: Never.self) { try configuration.validateRunAs(effectiveUID: 0) }
    do {
      try configuration.validateRunAs(effectiveUID: 1_000)
      Issue.record("a non-root executor was allowed to run tasks as another user")
    } catch {
      #expect(error.field == "exec.runAs")
    }
    configuration.exec.privilegeTool = "/nonexistent/setpriv"
    do {
      try configuration.validateRunAs(effectiveUID: 0)
      Issue.record("a missing privilege tool was accepted")
    } catch {
      #expect(error.field == "exec.privilegeTool")
    }
    configuration.operators = ["noop"]
    #expect(throws: Never.self) { try configuration.validateRunAs(effectiveUID: 1_000) }
  }
}
