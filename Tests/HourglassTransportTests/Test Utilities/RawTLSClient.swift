import HourglassRPC
import HourglassTransport
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS

/// A TLS client that sends arbitrary bytes and collects the frames the server answers with,
/// for tests of malformed input.
final class RawTLSClient: Sendable {
  let channel: any Channel
  private let frames: AsyncStream<Frame>

  private init(channel: any Channel, frames: AsyncStream<Frame>) {
    self.channel = channel
    self.frames = frames
  }

  static func connect(port: Int, configuration: TLSConfiguration, serverName: String? = nil) async throws -> RawTLSClient {
    let (frames, continuation) = AsyncStream<Frame>.makeStream()
    let context = try NIOSSLContext(configuration: configuration)
    let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
      .channelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          let sync = channel.pipeline.syncOperations
          try sync.addHandler(ReadGate())
          try sync.addHandler(try NIOSSLClientHandler(context: context, serverHostname: serverName))
          try sync.addHandler(ByteToMessageHandler(FrameDecoder(maxFrameSize: 1 << 24, expectPreface: false)))
          try sync.addHandler(Collector(continuation: continuation))
        }
      }
      .connect(host: "127.0.0.1", port: port).get()
    return RawTLSClient(channel: channel, frames: frames)
  }

  static func standardConfiguration(_ credentials: TLSCredentials = TestPKI.aliceCredentials) throws -> TLSConfiguration {
    try credentials.clientConfiguration()
  }

  /// From now on nothing more is read from the socket (not even by TLS for itself): the server
  /// sees a peer that has stopped reading.
  func stopReading() async throws {
    try await channel.setOption(ChannelOptions.autoRead, value: false).get()
    try await channel.pipeline.handler(type: ReadGate.self).map { $0.closed = true }.get()
  }

  /// Reads again after ``stopReading()``.
  func startReading() async throws {
    try await channel.pipeline.handler(type: ReadGate.self).map { $0.closed = false }.get()
    try await channel.setOption(ChannelOptions.autoRead, value: true).get()
    channel.read()
  }

  func send(_ bytes: [UInt8]) async throws {
    try await channel.writeAndFlush(ByteBuffer(bytes: bytes)).get()
  }

  /// Every frame received until the server closes the connection.
  func framesUntilClose() async -> [Frame] {
    var all: [Frame] = []
    for await frame in frames { all.append(frame) }
    return all
  }

  /// The frames received until one of `type` arrives (included), or until the connection closes.
  func frames(until type: FrameType) async -> [Frame] {
    var all: [Frame] = []
    for await frame in frames {
      all.append(frame)
      if frame.type == type { break }
    }
    return all
  }

  /// Resolves when the connection closes; returns how.
  func waitForClose() async {
    try? await channel.closeFuture.get()
  }

  private final class Collector: ChannelInboundHandler, Sendable {
    typealias InboundIn = Frame
    let continuation: AsyncStream<Frame>.Continuation
    init(continuation: AsyncStream<Frame>.Continuation) { self.continuation = continuation }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
      continuation.yield(unwrapInboundIn(data))
    }
    func channelInactive(context: ChannelHandlerContext) {
      continuation.finish()
    }
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
      continuation.finish()
      context.close(promise: nil)
    }
  }
}

/// Encodes frames for raw tests.
enum RawFrames {
  static func frame(_ type: FrameType, flags: FrameFlags = [], stream: UInt32, payload: [UInt8]) -> [UInt8] {
    var buffer = ByteBuffer()
    FrameEncoderHandler.write(Frame(type: type, flags: flags, streamID: stream, payload: ByteBuffer(bytes: payload)), into: &buffer)
    return Array(buffer.readableBytesView)
  }

  static let preface = ConnectionPreface.bytes
  static let emptySettings = frame(.settings, stream: 0, payload: [])
}

/// Below TLS: passes the pipeline's read requests on until closed, then drops them.
final class ReadGate: ChannelOutboundHandler, @unchecked Sendable {
  typealias OutboundIn = ByteBuffer
  /// Touched only on the channel's event loop.
  var closed = false

  func read(context: ChannelHandlerContext) {
    if !closed { context.read() }
  }
}
