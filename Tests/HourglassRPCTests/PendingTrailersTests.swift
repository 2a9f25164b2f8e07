import Logging
import NIOCore
import NIOEmbedded
import Synchronization
import Testing

@testable import HourglassRPC

/// A server handler's `finish` whose TRAILERS wait behind a message the client has no credit
/// for: the call's deadline, or a second finish, must not replace those TRAILERS, or the promise
/// the handler's `finish` waits on is dropped and never completes (a server shutdown then waits
/// for that handler for ever).
@Suite("Server TRAILERS waiting for credit")
struct PendingTrailersTests {
  private static let logger = Logger(label: "hourglass.test", factory: { _ in SwiftLogNoOpLogHandler() })

  /// A server stream whose client grants one message of credit and gives the call a deadline of
  /// one second; the handler's first message has used that credit.
  private static func streamWithoutCredit() async throws -> (EmbeddedChannel, RPCServerStream) {
    let channel = EmbeddedChannel()
    let accepted = NIOLoopBoundBox<[RPCServerStream]>([], eventLoop: channel.embeddedEventLoop)
    try channel.pipeline.syncOperations.addHandler(
      RPCConnectionHandler(serverWith: .defaults, peer: nil, logger: logger, onStream: { accepted.value.append($0) }))
    try await channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 7_070)).get()
    var settings = ConnectionSettings.defaults
    settings.initialStreamCredit = 1
    try channel.writeInbound(try ClientOpening.bytes(method: "/test.Service/Stream", settings: settings, timeoutMicros: 1_000_000))
    let stream = try #require(accepted.value.first)
    // On the embedded loop the write is done, and its promise kept, before this returns.
    try await stream.writer.writeMessage(ByteBuffer(bytes: [1]))
    return (channel, stream)
  }

  /// The types of the frames the server wrote for stream 1 since the last call.
  private static func writtenFrames(_ channel: EmbeddedChannel) throws -> [FrameType] {
    var written = ByteBuffer()
    while var chunk = try channel.readOutbound(as: ByteBuffer.self) { written.writeBuffer(&chunk) }
    var decoder = FrameDecoder(maxFrameSize: 1 << 20, expectPreface: false)
    var types: [FrameType] = []
    while let frame = try decoder.decode(buffer: &written) {
      if frame.streamID == 1 { types.append(frame.type) }
    }
    return types
  }

  @Test("the deadline passing while the handler's TRAILERS wait for credit resets the call, and the handler's finish completes")
  func deadlineWhileTrailersWait() async throws {
    let (channel, stream) = try await Self.streamWithoutCredit()
    let finished = Mutex(0)
    stream.writer.finish(lastMessage: ByteBuffer(bytes: [2]), status: Status(code: .ok), metadata: [:]) { finished.withLock { $0 += 1 } }
    channel.embeddedEventLoop.run()
    #expect(finished.withLock { $0 } == 0, "the last message and the TRAILERS wait for credit")
    _ = try Self.writtenFrames(channel)
    channel.embeddedEventLoop.advanceTime(by: .seconds(2))
    #expect(finished.withLock { $0 } == 1, "the handler's finish completed when the deadline ended the call")
    #expect(try Self.writtenFrames(channel) == [.reset], "the call ends with RESET, never with TRAILERS of the deadline's making")
    _ = try channel.finish(acceptAlreadyClosed: true)
  }

  @Test("a second finish while the first one's TRAILERS wait for credit fails at once; the first stands and completes")
  func secondFinishWhileTrailersWait() async throws {
    let (channel, stream) = try await Self.streamWithoutCredit()
    let first = Mutex(0)
    let second = Mutex(0)
    stream.writer.finish(lastMessage: ByteBuffer(bytes: [2]), status: Status(code: .ok), metadata: [:]) { first.withLock { $0 += 1 } }
    stream.writer.finish(lastMessage: nil, status: Status(code: .internal, message: "again"), metadata: [:]) { second.withLock { $0 += 1 } }
    channel.embeddedEventLoop.run()
    #expect(second.withLock { $0 } == 1, "refused at once")
    #expect(first.withLock { $0 } == 0)
    _ = try Self.writtenFrames(channel)
    // The client grants credit: the last message goes, then the first finish's OK.
    var credit = ByteBuffer()
    FrameEncoderHandler.write(Frame(type: .credit, streamID: 1, payload: ByteBuffer(integer: UInt32(1))), into: &credit)
    try channel.writeInbound(credit)
    channel.embeddedEventLoop.run()
    #expect(first.withLock { $0 } == 1)
    #expect(try Self.writtenFrames(channel) == [.message, .trailers])
    _ = try channel.finish(acceptAlreadyClosed: true)
  }
}
