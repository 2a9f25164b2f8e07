import NIOCore
import NIOEmbedded
import Testing

@testable import HourglassRPC

@Suite("Inbound queue")
struct InboundQueueTests {
  @Test("returns queued elements in order, then nil once finished")
  func queuedThenFinished() async throws {
    let queue = InboundQueue<Int>()
    queue.yield(1)
    queue.yield(2)
    queue.finish()
    queue.yield(3)  // after the end: dropped
    #expect(try await queue.next() == 1)
    #expect(try await queue.next() == 2)
    #expect(try await queue.next() == nil)
    #expect(try await queue.next() == nil)
  }

  @Test("a reader waiting for an element is resumed by yield and by finish")
  func waitingReader() async throws {
    let queue = InboundQueue<Int>()
    let reader = Task { try await queue.next() }
    queue.yield(7)
    #expect(try await reader.value == 7)
    let end = Task { try await queue.next() }
    queue.finish()
    #expect(try await end.value == nil)
  }

  @Test("an error is thrown once, after the elements queued before it")
  func failure() async throws {
    struct Boom: Error {}
    let queue = InboundQueue<Int>()
    queue.yield(1)
    queue.finish(throwing: Boom())
    #expect(try await queue.next() == 1)
    await #expect(throws: Boom.self) { try await queue.next() }
    #expect(try await queue.next() == nil)
  }

  @Test("cancelling a waiting reader ends its iteration with nil")
  func cancellation() async throws {
    let queue = InboundQueue<Int>()
    let reader = Task { try await queue.next() }
    reader.cancel()
    #expect(try await reader.value == nil)
    queue.yield(1)  // the queue has ended: dropped
    #expect(try await queue.next() == nil)
  }
}

@Suite("Stream termination")
struct StreamTerminationTests {
  @Test("an early end cancels the bound handler task; a normal finish does not")
  func cancelsBoundTask() async {
    let early = StreamTermination()
    let blocked = Task<Void, Never> {
      while !Task.isCancelled { await Task.yield() }
    }
    early.cancelOnEarlyEnd(blocked)
    early.signal(.reset(.cancelled))
    await blocked.value
    #expect(blocked.isCancelled)

    let normal = StreamTermination()
    let finishing = Task<Void, Never> {}
    normal.cancelOnEarlyEnd(finishing)
    normal.signal(.finished)
    normal.signal(.deadlineExceeded)  // later signals do nothing
    await finishing.value
    #expect(!finishing.isCancelled)
  }

  @Test("a task bound after the stream already ended early is cancelled at once")
  func boundLate() async {
    let termination = StreamTermination()
    termination.signal(.connectionClosed)
    let task = Task<Void, Never> {
      while !Task.isCancelled { await Task.yield() }
    }
    termination.cancelOnEarlyEnd(task)
    await task.value
    #expect(task.isCancelled)
  }
}

@Suite("Frame encoder gathering")
struct FrameEncoderGatheringTests {
  @Test("frames written before a flush leave as one buffer, in order")
  func gathersUntilFlush() throws {
    let channel = EmbeddedChannel(handler: FrameEncoderHandler(writePreface: true))
    let first = Frame(type: .settings, streamID: 0, payload: ByteBuffer())
    let second = Frame(type: .headers, streamID: 1, payload: ByteBuffer(bytes: [1, 2, 3]))
    channel.write(first, promise: nil)
    channel.write(second, promise: nil)
    #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)
    channel.flush()
    var expected = ByteBuffer(bytes: ConnectionPreface.bytes)
    FrameEncoderHandler.write(first, into: &expected)
    FrameEncoderHandler.write(second, into: &expected)
    #expect(try channel.readOutbound(as: ByteBuffer.self) == expected)
    #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)
    _ = try channel.finish()
  }

  @Test("every write's promise completes when the gathered buffer is written")
  func promises() throws {
    let channel = EmbeddedChannel(handler: FrameEncoderHandler(writePreface: false))
    let a = channel.eventLoop.makePromise(of: Void.self)
    let b = channel.eventLoop.makePromise(of: Void.self)
    channel.write(Frame(type: .ping, streamID: 0, payload: ByteBuffer(bytes: [0, 0, 0, 0, 0, 0, 0, 1])), promise: a)
    channel.write(Frame(type: .ping, streamID: 0, payload: ByteBuffer(bytes: [0, 0, 0, 0, 0, 0, 0, 2])), promise: b)
    channel.flush()
    try a.futureResult.wait()
    try b.futureResult.wait()
    _ = try channel.finish()
  }
}
