import NIOCore
import NIOEmbedded
import NIOTestUtils
import Testing

@testable import HourglassRPC

@Suite("Frame codec")
struct FrameCodecTests {
  private func encoded(_ frames: [Frame], preface: Bool = false) -> ByteBuffer {
    var buffer = ByteBuffer()
    if preface { buffer.writeBytes(ConnectionPreface.bytes) }
    for frame in frames { FrameEncoderHandler.write(frame, into: &buffer) }
    return buffer
  }

  private static let sample: [Frame] = [
    Frame(type: .settings, streamID: 0, payload: ByteBuffer()),
    Frame(type: .headers, flags: [], streamID: 1, payload: ByteBuffer(bytes: [0x0A, 0x02, 0x2F, 0x78])),
    Frame(type: .message, flags: .more, streamID: 1, payload: ByteBuffer(bytes: Array(repeating: 7, count: 300))),
    Frame(type: .message, flags: .endStream, streamID: 1, payload: ByteBuffer(bytes: [1, 2, 3])),
    Frame(type: .credit, streamID: 1, payload: ByteBuffer(bytes: [0, 0, 0, 5])),
    Frame(type: FrameType(rawValue: 0x42), streamID: 0, payload: ByteBuffer(bytes: [9])),
  ]

  @Test("decodes frames however the bytes are split (ByteToMessageDecoderVerifier)")
  func verifier() throws {
    var input = encoded(Self.sample)
    let expected = Self.sample
    try ByteToMessageDecoderVerifier.verifyDecoder(
      inputOutputPairs: [(input.readSlice(length: input.readableBytes)!, expected)],
      decoderFactory: { ByteToMessageHandlerAdapter(FrameDecoder(maxFrameSize: 16_384, expectPreface: false)) }
    )
  }

  @Test("accepts the preface and then frames")
  func preface() throws {
    var decoder = FrameDecoder(maxFrameSize: 16_384, expectPreface: true)
    var buffer = encoded([Self.sample[0]], preface: true)
    let frame = try decoder.decode(buffer: &buffer)
    #expect(frame == Self.sample[0])
  }

  @Test("refuses a wrong preface at the first wrong byte")
  func badPreface() {
    var decoder = FrameDecoder(maxFrameSize: 16_384, expectPreface: true)
    var buffer = ByteBuffer(bytes: Array("HGX".utf8))
    #expect(throws: ProtocolViolation.self) { try decoder.decode(buffer: &buffer) }
  }

  @Test("rejects an oversized frame from its header alone, before any payload arrives")
  func oversize() {
    var decoder = FrameDecoder(maxFrameSize: 16_384, expectPreface: false)
    var header = ByteBuffer()
    header.writeInteger(UInt32(16_385))
    header.writeInteger(FrameType.message.rawValue)
    header.writeInteger(UInt8(0))
    header.writeInteger(UInt32(1))
    do {
      _ = try decoder.decode(buffer: &header)
      Issue.record("an oversized frame was accepted")
    } catch let violation as ProtocolViolation {
      #expect(violation.kind == .frameTooLarge)
      #expect(violation.kind.code == .resourceExhausted)
    } catch {
      Issue.record("unexpected error \(error)")
    }
  }

  @Test("rejects a stream id with the reserved bit set")
  func reservedBit() {
    var decoder = FrameDecoder(maxFrameSize: 16_384, expectPreface: false)
    var buffer = ByteBuffer()
    buffer.writeInteger(UInt32(0))
    buffer.writeInteger(FrameType.ping.rawValue)
    buffer.writeInteger(UInt8(0))
    buffer.writeInteger(UInt32(0x8000_0001))
    #expect(throws: ProtocolViolation.self) { try decoder.decode(buffer: &buffer) }
  }

  @Test("waits for a whole header and payload")
  func partial() throws {
    var decoder = FrameDecoder(maxFrameSize: 16_384, expectPreface: false)
    let whole = encoded([Self.sample[3]])
    var first = whole.getSlice(at: 0, length: 5)!
    #expect(try decoder.decode(buffer: &first) == nil)
    var most = whole.getSlice(at: 0, length: whole.readableBytes - 1)!
    #expect(try decoder.decode(buffer: &most) == nil)
    var all = whole
    #expect(try decoder.decode(buffer: &all) == Self.sample[3])
  }

  @Test("writes the header byte by byte as the spec lays it out, then the payload's readable bytes")
  func encoderLayout() {
    // A payload that is a slice of a larger buffer, read from part-way: only its readable
    // bytes go out.
    var source = ByteBuffer(bytes: [0xEE, 0xEE, 0x01, 0x02, 0x03, 0xEE])
    source.moveReaderIndex(forwardBy: 2)
    let payload = source.getSlice(at: source.readerIndex, length: 3)!
    var buffer = ByteBuffer(bytes: [0xAA])  // something already gathered
    FrameEncoderHandler.write(Frame(type: .message, flags: .endStream, streamID: 0x0102_0304, payload: payload), into: &buffer)
    FrameEncoderHandler.write(Frame(type: .trailers, streamID: 0x7FFF_FFFF, payload: ByteBuffer()), into: &buffer)
    #expect(
      Array(buffer.readableBytesView) == [
        0xAA,
        0x00, 0x00, 0x00, 0x03, FrameType.message.rawValue, FrameFlags.endStream.rawValue, 0x01, 0x02, 0x03, 0x04, 0x01, 0x02, 0x03,
        0x00, 0x00, 0x00, 0x00, FrameType.trailers.rawValue, 0x00, 0x7F, 0xFF, 0xFF, 0xFF,
      ])
  }
}

/// Adapts the single-step decoder for the verifier, which wants a `ByteToMessageDecoder`.
struct ByteToMessageHandlerAdapter: ByteToMessageDecoder {
  typealias InboundOut = Frame
  var decoder: FrameDecoder

  init(_ decoder: FrameDecoder) { self.decoder = decoder }

  mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
    guard let frame = try decoder.decode(buffer: &buffer) else { return .needMoreData }
    context.fireChannelRead(NIOAny(frame))
    return .continue
  }

  mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
    try decode(context: context, buffer: &buffer)
  }
}
