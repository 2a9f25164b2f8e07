import HourglassCore
import Testing

@Suite("InFlightBudget: work in flight bounded by items and bytes")
struct InFlightBudgetTests {
  @Test("takes within both bounds at once; gives back exactly what was taken")
  func withinBounds() async throws {
    let budget = InFlightBudget(items: 3, bytes: 100)
    try await budget.take(items: 2, bytes: 40)
    try await budget.take(items: 1, bytes: 60)
    #expect(budget.inFlight == (3, 100))
    budget.give(items: 2, bytes: 40)
    budget.give(items: 1, bytes: 60)
    #expect(budget.inFlight == (0, 0))
  }

  @Test("one piece larger than both bounds goes through when nothing else is in flight")
  func oversizedAlone() async throws {
    let budget = InFlightBudget(items: 1, bytes: 10)
    try await budget.take(items: 5, bytes: 1_000)
    #expect(budget.inFlight == (5, 1_000))
  }

  @Test("over the item bound or the byte bound, a taker waits until enough is given back")
  func waitsForRoom() async throws {
    for (items, bytes) in [(2, 10), (1, 90)] {
      let (waits, waited) = AsyncStream<(Int, Int)>.makeStream()
      let budget = InFlightBudget(items: 2, bytes: 100) { waited.yield(($0, $1)) }
      try await budget.take(items: 1, bytes: 20)
      let taker = Task { try await budget.take(items: items, bytes: bytes) }
      var iterator = waits.makeAsyncIterator()
      let seen = await iterator.next()
      #expect(seen.map { [$0.0, $0.1] } == [1, 20])
      #expect(budget.inFlight == (1, 20))
      budget.give(items: 1, bytes: 20)
      try await taker.value
      #expect(budget.inFlight == (items, bytes))
    }
  }

  @Test("a cancelled taker throws and takes nothing")
  func cancelled() async throws {
    let (waits, waited) = AsyncStream<Void>.makeStream()
    let budget = InFlightBudget(items: 1, bytes: 100) { _, _ in waited.yield() }
    try await budget.take(items: 1, bytes: 1)
    let taker = Task { try await budget.take(items: 1, bytes: 1) }
    var iterator = waits.makeAsyncIterator()
    _ = await iterator.next()
    taker.cancel()
    await #expect(throws: CancellationError.self) { try await taker.value }
    budget.give(items: 1, bytes: 1)
    #expect(budget.inFlight == (0, 0))
  }

  @Test("tryTake takes what fits, refuses (taking nothing) what does not, and lets anything through when empty")
  func tryTake() {
    let budget = InFlightBudget(items: 2, bytes: 100)
    #expect(budget.tryTake(items: 5, bytes: 500))
    #expect(!budget.tryTake(items: 1, bytes: 1))
    budget.give(items: 5, bytes: 500)
    #expect(budget.tryTake(items: 1, bytes: 60))
    #expect(!budget.tryTake(items: 1, bytes: 41))
    #expect(budget.tryTake(items: 1, bytes: 40))
    #expect(!budget.tryTake(items: 1, bytes: 0))
    #expect(budget.inFlight == (2, 100))
  }
}
