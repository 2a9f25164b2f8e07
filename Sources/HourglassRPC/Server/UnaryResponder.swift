import NIOCore
import SwiftProtobuf
import Synchronization

/// Answers one unary call whose handler runs on the connection's event loop
/// (``RPCRouter/registerUnaryOnEventLoop(_:answering:)``).
///
/// Answer exactly once, from any thread: a second answer is ignored. Answering on the
/// connection's own thread, before or after the handler returns, sends the reply at once;
/// answering from another thread costs one hop onto that loop. A responder dropped without an
/// answer ends the call with `INTERNAL`, so that a forgotten path cannot leave a client waiting.
public struct UnaryResponder<Response: SwiftProtobuf.Message>: Sendable {
  @usableFromInline let answer: UnaryAnswer

  @usableFromInline
  init(answer: UnaryAnswer) {
    self.answer = answer
  }

  /// Ends the call with `OK` and `response`.
  @inlinable
  public func succeed(_ response: Response) {
    do {
      answer.settle(UnaryEnding(last: try MessageCoding.encode(response), status: .ok, metadata: [:]))
    } catch {
      answer.settle(UnaryEnding(error, answer.annotations))
    }
  }

  /// Ends the call with the status of `error`: an ``RPCError``'s own, `CANCELLED` for a
  /// `CancellationError`, `UNKNOWN` (without details) for anything else.
  @inlinable
  public func fail(_ error: any Error) {
    answer.settle(UnaryEnding(error, answer.annotations))
  }

  /// Ends the call as `result` says.
  @inlinable
  public func complete(_ result: Result<Response, any Error>) {
    switch result {
    case .success(let response): succeed(response)
    case .failure(let error): fail(error)
    }
  }
}

/// How a call ends: OK with the body's last message, or the status of the error it threw
/// (`UNKNOWN` without details for errors that are not ``RPCError``).
@usableFromInline
struct UnaryEnding: Sendable {
  @usableFromInline var last: ByteBuffer?
  @usableFromInline var status: Status
  @usableFromInline var metadata: Metadata

  @usableFromInline
  init(last: ByteBuffer?, status: Status, metadata: Metadata) {
    self.last = last
    self.status = status
    self.metadata = metadata
  }

  /// The end of a call whose body threw `error`. The error's cause, which the client is not
  /// told, goes into the call's annotations for its log.
  @usableFromInline
  init(_ error: any Error, _ context: ServerContext) {
    self.init(error, context.annotations)
  }

  /// The end of a call whose body threw `error`, its cause noted in `annotations`.
  @usableFromInline
  init(_ error: any Error, _ annotations: CallAnnotations) {
    last = nil
    metadata = [:]
    switch error {
    case let error as RPCError:
      if let cause = error.cause { annotations["hourglass.error_cause"] = "\(cause)" }
      status = Status(code: error.code, message: error.message)
      metadata = error.metadata
    case is CancellationError:
      status = Status(code: .cancelled, message: "the call was cancelled")
    default:
      annotations["hourglass.error_cause"] = "\(error)"
      status = Status(code: .unknown, message: "the server failed to handle the call")
    }
  }

  /// Sends this ending on `writer`: at once when it can (on the connection's thread, nothing
  /// queued), otherwise by waiting.
  @usableFromInline
  func send(on writer: any ServerStreamWriter) async {
    if writer.finishWithoutWaiting(lastMessage: last, status: status, metadata: metadata) { return }
    try? await writer.finish(lastMessage: last, status: status, metadata: metadata)
  }
}

/// The one answer of a unary call handled on the loop; the subclass says where it goes
/// (`RPCServer`'s, or ``AwaitedAnswer``).
///
/// Unchecked: `annotations` is a constant and `answered` is atomic.
@usableFromInline
class UnaryAnswer: @unchecked Sendable {
  /// The call's annotations, where a failure's cause is noted (all an answer needs of its
  /// context).
  @usableFromInline let annotations: CallAnnotations
  private let answered = Atomic<Bool>(false)

  init(annotations: CallAnnotations) {
    self.annotations = annotations
  }

  /// Delivers `ending` if nothing was delivered before.
  @usableFromInline
  final func settle(_ ending: UnaryEnding) {
    guard answered.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged else { return }
    deliver(ending)
  }

  /// Where the ending goes; runs once.
  func deliver(_ ending: UnaryEnding) {}

  /// What a subclass's `deinit` delivers when the handler dropped its responder unanswered
  /// (each subclass does it in its own `deinit`, while its own properties are still there).
  final var endingIfDropped: UnaryEnding? {
    guard !answered.load(ordering: .acquiring) else { return nil }
    return UnaryEnding(last: nil, status: Status(code: .internal, message: "the handler did not answer the call"), metadata: [:])
  }
}

/// An answer awaited by a task: a loop handler run by a transport without an event loop (the
/// in-process one), or whose request did not come with the stream.
@usableFromInline
final class AwaitedAnswer: UnaryAnswer, @unchecked Sendable {
  // Unchecked: the continuation is set once before the handler runs and resumed once.
  private var continuation: CheckedContinuation<UnaryEnding, Never>?

  /// Runs `body` with an answer and waits for the ending it delivers.
  @usableFromInline
  static func run(_ context: ServerContext, _ body: (AwaitedAnswer) -> Void) async -> UnaryEnding {
    await withCheckedContinuation { continuation in
      let answer = AwaitedAnswer(annotations: context.annotations)
      answer.continuation = continuation
      body(answer)
    }
  }

  deinit {
    if let dropped = endingIfDropped { deliver(dropped) }
  }

  override func deliver(_ ending: UnaryEnding) {
    continuation?.resume(returning: ending)
    continuation = nil
  }
}
