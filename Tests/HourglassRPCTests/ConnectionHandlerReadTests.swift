import Logging
import NIOCore
import NIOEmbedded
import SwiftProtobuf
import Testing

@testable import HourglassRPC

/// The server side of ``RPCConnectionHandler`` reading bytes: it splits them into frames
/// itself, and hands a unary call's request to the handler with the stream when HEADERS and
/// the one END_STREAM MESSAGE arrive together, or queues it when they arrive apart.
@Suite("Connection handler reads")
struct ConnectionHandlerReadTests {
  private static let logger = Logger(label: "hourglass.test", factory: { _ in SwiftLogNoOpLogHandler() })

  /// The client's preface and SETTINGS, then HEADERS for stream 1.
  private static func opening(method: String) throws -> ByteBuffer {
    try ClientOpening.bytes(method: method)
  }

  private static func request(_ bytes: [UInt8]) -> ByteBuffer {
    var frame = ByteBuffer()
    FrameEncoderHandler.write(Frame(type: .message, flags: .endStream, streamID: 1, payload: ByteBuffer(bytes: bytes)), into: &frame)
    return frame
  }

  /// Feeds `reads` to a server handler and returns the one stream it accepted.
  private static func acceptedStream(_ reads: [ByteBuffer]) throws -> (EmbeddedChannel, RPCServerStream?) {
    let channel = EmbeddedChannel()
    let accepted = NIOLoopBoundBox<[RPCServerStream]>([], eventLoop: channel.embeddedEventLoop)
    try channel.pipeline.syncOperations.addHandler(
      RPCConnectionHandler(serverWith: .defaults, peer: nil, logger: logger, onStream: { accepted.value.append($0) })
    )
    try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 7_070)).wait()
    for read in reads {
      try channel.writeInbound(read)
    }
    #expect(accepted.value.count == 1)
    return (channel, accepted.value.first)
  }

  private static func messages(_ stream: RPCServerStream) async throws -> [[UInt8]] {
    var all: [[UInt8]] = []
    for try await message in stream.inbound { all.append(Array(message.readableBytesView)) }
    return all
  }

  @Test("HEADERS and the request in one read: the stream starts with its request")
  func unaryInOneRead() async throws {
    var bytes = try Self.opening(method: "/test.Service/Unary")
    var message = Self.request([1, 2, 3])
    bytes.writeBuffer(&message)
    let (channel, stream) = try Self.acceptedStream([bytes])
    let accepted = try #require(stream)
    #expect(accepted.head.method == "/test.Service/Unary")
    #expect(try await Self.messages(accepted) == [[1, 2, 3]])
    #expect(channel.isActive)
    _ = try channel.finish(acceptAlreadyClosed: true)
  }

  @Test("HEADERS and the request in separate reads, a byte at a time: the same request")
  func unaryInPieces() async throws {
    var bytes = try Self.opening(method: "/test.Service/Unary")
    var message = Self.request([4, 5])
    bytes.writeBuffer(&message)
    let reads = bytes.readableBytesView.map { ByteBuffer(bytes: [$0]) }
    let (channel, stream) = try Self.acceptedStream(reads)
    let accepted = try #require(stream)
    #expect(try await Self.messages(accepted) == [[4, 5]])
    #expect(channel.isActive)
    _ = try channel.finish(acceptAlreadyClosed: true)
  }

  @Test("HEADERS alone start a stream whose requests are still to come")
  func headersAlone() async throws {
    let (channel, stream) = try Self.acceptedStream([try Self.opening(method: "/test.Service/Stream")])
    let accepted = try #require(stream)
    try channel.writeInbound(Self.request([9]))
    #expect(try await Self.messages(accepted) == [[9]])
    _ = try channel.finish(acceptAlreadyClosed: true)
  }

  @Test("a frame the decoder refuses closes the connection with GOAWAY")
  func decoderError() throws {
    var bytes = try Self.opening(method: "/test.Service/Unary")
    bytes.writeInteger(UInt32(1 << 30))  // a frame far over the maximum size
    bytes.writeBytes([UInt8](repeating: 0, count: 6))
    let channel = EmbeddedChannel()
    try channel.pipeline.syncOperations.addHandler(
      RPCConnectionHandler(serverWith: .defaults, peer: nil, logger: Self.logger, onStream: { _ in })
    )
    try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 7_070)).wait()
    try channel.writeInbound(bytes)
    #expect(!channel.isActive)
    var written = ByteBuffer()
    while var chunk = try channel.readOutbound(as: ByteBuffer.self) { written.writeBuffer(&chunk) }
    var decoder = FrameDecoder(maxFrameSize: 1 << 20, expectPreface: false)
    var types: [FrameType] = []
    while let frame = try decoder.decode(buffer: &written) { types.append(frame.type) }
    #expect(types.last == .goAway)
    _ = try channel.finish(acceptAlreadyClosed: true)
  }

  /// The handler's timers (SETTINGS, keepalive, idle, a call's deadline) hold it strongly, so
  /// that it has no weak-reference side table; closing the connection must cancel them all, or
  /// the event loop would keep the handler, and everything it holds, until they fire.
  @Test("a closed connection's handler is freed: closing cancels every timer that holds it")
  func freedOnClose() throws {
    weak var freed: RPCConnectionHandler?
    let channel = EmbeddedChannel()
    do {
      var configuration = RPCConnectionHandler.Configuration.defaults
      configuration.keepaliveInterval = .seconds(30)
      configuration.idleTimeout = .seconds(300)
      let handler = RPCConnectionHandler(serverWith: configuration, peer: nil, logger: Self.logger, onStream: { _ in })
      freed = handler
      try channel.pipeline.syncOperations.addHandler(handler)
    }
    try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 7_070)).wait()
    // A call with a deadline, so that a stream's timer is armed too.
    try channel.writeInbound(try ClientOpening.bytes(method: "/test.Service/Unary", timeoutMicros: 60_000_000))
    #expect(freed != nil)
    _ = try channel.close().wait()
    channel.embeddedEventLoop.run()
    #expect(freed == nil)
  }
}
