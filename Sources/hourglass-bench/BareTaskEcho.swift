import DequeModule
import HourglassTransport
import NIOCore

/// The bare echo with Swift tasks where the RPC path's async API has them: the server answers
/// each request from a task of its own, started at once on the connection's loop and
/// preferring it; each client call is awaited by a task preferring its connection's loop, with
/// a cancellation handler and a continuation. No RPC layer: the frames are the bare ones.
///
/// Its ratio to the bare row is what Swift's task machinery alone costs on this machine, the
/// floor under the async API's ratio (`--bare-tasks`).
enum BareTaskEcho {
  /// Answers every frame from a task started at once on the loop.
  ///
  /// Unchecked: `context` is set and used on the channel's loop only (the tasks run there).
  final class EchoHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let replyBytes: Int
    private var context: ChannelHandlerContext?
    private var executor: EventLoopTaskExecutor?

    init(replyBytes: Int) { self.replyBytes = replyBytes }

    func handlerAdded(context: ChannelHandlerContext) {
      self.context = context
      executor = EventLoopTaskExecutor(loop: context.eventLoop)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
      let reply: @concurrent @Sendable () async -> Void = { [self] in self.reply() }
      Task.immediate(executorPreference: executor, operation: reply)
    }

    private func reply() {
      guard let context else { return }
      context.write(wrapOutboundOut(BareEcho.frame(bytes: replyBytes, fill: 0x2A, allocator: context.channel.allocator)), promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
      context.flush()
    }
  }

  /// Sends a request for each awaited call and resumes the calls in order as replies arrive.
  ///
  /// Unchecked: everything is touched on the channel's loop only (callers prefer it).
  final class CallHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    private let request: ByteBuffer
    private var context: ChannelHandlerContext?
    private var waiting = Deque<UnsafeContinuation<Void, Never>>()
    private var flushScheduled = false

    init(requestBytes: Int) {
      self.request = BareEcho.frame(bytes: requestBytes, fill: 0x11)
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    /// One echo, awaited; from a task that prefers the channel's loop.
    func call() async {
      await withTaskCancellationHandler {
        await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
          guard let context else { return continuation.resume() }
          precondition(context.eventLoop.inEventLoop, "a calling task must prefer its connection's loop")
          waiting.append(continuation)
          context.write(wrapOutboundOut(request), promise: nil)
          // Written in a batch of resumed tasks, outside any read: flushed once per batch.
          if !flushScheduled {
            flushScheduled = true
            context.eventLoop.execute { [self] in
              flushScheduled = false
              self.context?.flush()
            }
          }
        }
      } onCancel: {
      }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
      waiting.popFirst()?.resume()
    }

    func channelReadComplete(context: ChannelHandlerContext) {
      context.flush()
    }
  }
}
