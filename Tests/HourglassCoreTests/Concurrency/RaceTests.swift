import HourglassCore
import Testing

@Suite("finishesFirst: a time limit that does not wait for the loser", .timeLimit(.minutes(1)))
struct RaceTests {
  @Test("the operation ending first wins, and the deadline's task is cancelled")
  func operationFirst() async {
    // The deadline would take an hour; it is cancelled as soon as the operation has won.
    let won = await finishesFirst({}, before: { try? await Task.sleep(for: .seconds(3600)) })
    #expect(won)
  }

  @Test("the deadline ending first returns at once, while the operation is still blocked")
  func deadlineFirst() async {
    let (gate, open) = AsyncStream<Void>.makeStream()
    // The operation waits on a stream nobody yields to until the test ends it: a task group, or
    // awaiting the operation's task, would wait here for as long as that.
    let won = await finishesFirst({ for await _ in gate {} }, before: {})
    #expect(!won)
    open.finish()
  }
}
