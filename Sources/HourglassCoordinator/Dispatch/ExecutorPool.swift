import Synchronization

/// The executors connected to this coordinator and what each may be sent: a plain value the
/// dispatcher owns. An executor receives a lease only while it holds a credit (one per free
/// slot), offers the run's operator, is known to be inside the clock-skew bound (measured by a
/// heartbeat) and is not draining.
struct ExecutorPool {
  /// One connected executor stream.
  struct Member: Sendable {
    var executorID: String
    var operators: Set<String>
    var slots: Int
    var credits = 0
    /// Whether its last measured clock skew is inside the bound: false until its first
    /// heartbeat, since an executor's clock is not known to be right before it is measured.
    var eligible = false
    var draining = false
    /// Its clock minus the coordinator's at its last heartbeat; nil before the first.
    var skewMicros: Int64?
    /// Grants taken for it and not yet written to its stream. An executor that grants credits
    /// but stops taking messages is sent no more once these reach its slot count.
    var unwritten = UnwrittenGrants()
  }

  private(set) var members: [UInt64: Member] = [:]
  private var rotation: UInt64 = 0

  /// Adds an executor's stream.
  mutating func add(session: UInt64, executorID: String, operators: Set<String>, slots: Int, unwritten: UnwrittenGrants = UnwrittenGrants()) {
    members[session] = Member(executorID: executorID, operators: operators, slots: slots, unwritten: unwritten)
  }

  /// Removes a stream; its credits go with it.
  mutating func remove(session: UInt64) {
    members[session] = nil
  }

  /// The executor granted `count` more credits; capped at its slot count.
  mutating func grant(session: UInt64, count: Int) {
    guard var member = members[session] else { return }
    member.credits = min(member.slots, member.credits + max(0, count))
    members[session] = member
  }

  /// Takes back up to `count` of an executor's unused credits; returns how many were taken.
  mutating func withdraw(session: UInt64, count: Int) -> Int {
    guard var member = members[session] else { return 0 }
    let taken = min(member.credits, max(0, count))
    member.credits -= taken
    members[session] = member
    return taken
  }

  /// Sets whether an executor's clock is inside the skew bound.
  mutating func setEligible(session: UInt64, _ eligible: Bool, skewMicros: Int64) {
    members[session]?.eligible = eligible
    members[session]?.skewMicros = skewMicros
  }

  /// The executor is shutting down.
  mutating func setDraining(session: UInt64) {
    members[session]?.draining = true
  }

  /// Picks the executor for a run of `operatorName` and takes one of its credits: the one with
  /// the most credits left (the least loaded), ties broken in rotation to spread load.
  ///
  /// `following` is the executor the previous run of the same batch went to: it gets this run
  /// too while it is within ``affinitySlack(slots:)`` credits of the least loaded. Each message,
  /// wake-up, result batch and credit grant then carries more runs (a batch that would reach
  /// every executor two runs each goes to one), while the load stays balanced to within that
  /// slack at every moment.
  mutating func take(operatorName: String, following previous: UInt64? = nil) -> UInt64? {
    rotation &+= 1
    var best: (session: UInt64, credits: Int, order: UInt64)?
    for (session, member) in members where Self.canTake(member, operatorName) {
      let order = (session &+ rotation) % UInt64(max(1, members.count))
      if best == nil || member.credits > best!.credits || (member.credits == best!.credits && order < best!.order) {
        best = (session, member.credits, order)
      }
    }
    guard var chosen = best?.session else { return nil }
    if let previous, previous != chosen, let member = members[previous], Self.canTake(member, operatorName),
      member.credits >= best!.credits - Self.affinitySlack(slots: member.slots)
    {
      chosen = previous
    }
    members[chosen]!.credits -= 1
    return chosen
  }

  /// Whether `member` may be sent a run of `operatorName` now.
  private static func canTake(_ member: Member, _ operatorName: String) -> Bool {
    member.credits > 0 && member.eligible && !member.draining && member.unwritten.count < member.slots
      && member.operators.contains(operatorName)
  }

  /// How many credits fewer than the least loaded executor the previous pick of a batch may hold
  /// and still get the next run: an eighth of its slots (32 of 256; none below 8 slots).
  static func affinitySlack(slots: Int) -> Int { slots / 8 }

  /// Gives back a credit taken for a lease that could not be created.
  mutating func refund(session: UInt64) {
    guard var member = members[session] else { return }
    member.credits = min(member.slots, member.credits + 1)
    members[session] = member
  }

  /// Free slots across executors, for metrics.
  var totalCredits: Int { members.values.reduce(0) { $0 + $1.credits } }
}

/// Grants taken for one executor's stream and not yet written to it: counted up by the
/// dispatcher as it hands them to the stream's writer, down by the writer once written (or
/// failed), without the writer waiting for the dispatcher between two writes.
final class UnwrittenGrants: Sendable {
  private let value = Atomic<Int>(0)

  /// How many there are now.
  var count: Int { value.load(ordering: .relaxed) }

  /// `delta` more (or, negative, fewer); returns the count before.
  @discardableResult
  func add(_ delta: Int) -> Int { value.add(delta, ordering: .relaxed).oldValue }
}
