import Testing

@testable import HourglassCoordinator

@Suite("Executor pool: credits, least loaded first, batches kept together within a slack")
struct ExecutorPoolTests {
  /// A pool of `count` executors (sessions 1…count) offering `noop`, each with `slots` credits
  /// and its clock measured inside the skew bound.
  static func pool(_ count: Int, slots: Int) -> ExecutorPool {
    var pool = ExecutorPool()
    for session in 1...UInt64(count) {
      pool.add(session: session, executorID: "exec-\(session)", operators: ["noop"], slots: slots)
      pool.grant(session: session, count: slots)
      pool.setEligible(session: session, true, skewMicros: 0)
    }
    return pool
  }

  /// Takes `count` runs as one batch does: each following the previous pick.
  static func batch(_ count: Int, from pool: inout ExecutorPool) -> [UInt64] {
    var picks: [UInt64] = []
    for _ in 0..<count {
      guard let session = pool.take(operatorName: "noop", following: picks.last) else { break }
      picks.append(session)
    }
    return picks
  }

  static func credits(_ pool: ExecutorPool) -> [Int] {
    pool.members.keys.sorted().map { pool.members[$0]!.credits }
  }

  @Test("a batch smaller than the slack goes to one executor; the next batch to another")
  func smallBatchesStayTogether() {
    var pool = Self.pool(4, slots: 256)
    let first = Self.batch(8, from: &pool)
    #expect(Set(first).count == 1)
    let second = Self.batch(8, from: &pool)
    #expect(Set(second).count == 1)
    #expect(second[0] != first[0], "the least loaded executor starts the next batch")
  }

  @Test("a large batch is split so that no executor is more than the slack behind the least loaded")
  func largeBatchesStayBalanced() {
    var pool = Self.pool(4, slots: 256)
    let slack = ExecutorPool.affinitySlack(slots: 256)
    for size in [200, 7, 64, 301, 1] {
      _ = Self.batch(size, from: &pool)
      let credits = Self.credits(pool)
      #expect(credits.max()! - credits.min()! <= slack + 1, "\(credits) after a batch of \(size)")
    }
    let picks = Self.batch(150, from: &pool)
    #expect(Set(picks).count == 4, "every executor takes part in a batch larger than the slack")
  }

  @Test("with few slots there is no slack: runs go to the least loaded, in rotation")
  func fewSlotsSpreadRunByRun() {
    var pool = Self.pool(2, slots: 4)
    #expect(ExecutorPool.affinitySlack(slots: 4) == 0)
    let picks = Self.batch(4, from: &pool)
    #expect(picks.filter { $0 == 1 }.count == 2)
    #expect(picks.filter { $0 == 2 }.count == 2)
    #expect(Self.credits(pool) == [2, 2])
  }

  @Test("the previous pick is not followed when it is refused, draining, without the operator or out of credits; none is taken before its clock is measured")
  func previousPickMustQualify() {
    var pool = Self.pool(2, slots: 256)
    let first = pool.take(operatorName: "noop")!
    let other: UInt64 = first == 1 ? 2 : 1
    pool.setEligible(session: first, false, skewMicros: 900_000)
    #expect(pool.take(operatorName: "noop", following: first) == other)
    pool.setEligible(session: first, true, skewMicros: 0)
    pool.setDraining(session: first)
    #expect(pool.take(operatorName: "noop", following: first) == other)

    var mixed = ExecutorPool()
    mixed.add(session: 1, executorID: "a", operators: ["exec"], slots: 64)
    mixed.add(session: 2, executorID: "b", operators: ["noop"], slots: 64)
    mixed.grant(session: 1, count: 64)
    mixed.grant(session: 2, count: 64)
    mixed.setEligible(session: 1, true, skewMicros: 0)
    #expect(mixed.take(operatorName: "noop") == nil, "b's clock is not measured yet")
    mixed.setEligible(session: 2, true, skewMicros: 0)
    #expect(mixed.take(operatorName: "noop", following: 1) == 2)

    var small = Self.pool(2, slots: 8)
    for _ in 0..<8 { _ = small.take(operatorName: "noop", following: 1) }
    #expect(small.members[1]!.credits >= 0)
    #expect(Self.credits(small).reduce(0, +) == 8, "credits are never overdrawn")
  }
}
