import NIOCore

/// Splits a byte stream into frames, rejecting an oversized frame from its header alone,
/// before any of its payload is buffered.
///
/// When `expectPreface` is set (the server side), the first eight bytes must be the connection
/// preface; they are checked byte by byte as they arrive so that garbage is refused at once.
public struct FrameDecoder: NIOSingleStepByteToMessageDecoder {
  public typealias InboundOut = Frame

  /// The largest payload accepted. Can be raised when the local settings change.
  public var maxFrameSize: Int
  private var prefaceBytesRemaining: Int

  /// Creates a decoder.
  /// - Parameters:
  ///   - maxFrameSize: the largest payload accepted, in bytes.
  ///   - expectPreface: whether the stream starts with ``ConnectionPreface``.
  public init(maxFrameSize: Int, expectPreface: Bool) {
    self.maxFrameSize = maxFrameSize
    self.prefaceBytesRemaining = expectPreface ? ConnectionPreface.bytes.count : 0
  }

  public mutating func decode(buffer: inout ByteBuffer) throws -> Frame? {
    if prefaceBytesRemaining > 0 {
      let offset = ConnectionPreface.bytes.count - prefaceBytesRemaining
      let available = min(buffer.readableBytes, prefaceBytesRemaining)
      guard available > 0 else { return nil }
      let got = buffer.readBytes(length: available)!
      guard got[...] == ConnectionPreface.bytes[offset..<(offset + available)] else {
        throw ProtocolViolation(.badPreface, "the connection did not start with the hourglass/1 preface")
      }
      prefaceBytesRemaining -= available
      if prefaceBytesRemaining > 0 { return nil }
    }

    guard buffer.readableBytes >= Frame.headerSize else { return nil }
    // The header in one read of the buffer's bytes: each `getInteger` checks its bounds and
    // its access to the storage again.
    let (length, type, flags, rawStreamID) = buffer.withUnsafeReadableBytes { header in
      (
        UInt32(bigEndian: header.loadUnaligned(fromByteOffset: 0, as: UInt32.self)), header[4], header[5],
        UInt32(bigEndian: header.loadUnaligned(fromByteOffset: 6, as: UInt32.self))
      )
    }

    // Checked before waiting for the payload: an oversized frame is never buffered.
    guard length <= maxFrameSize else {
      throw ProtocolViolation(
        .frameTooLarge,
        "\(FrameType(rawValue: type)) frame of \(length) bytes exceeds the maximum frame size of \(maxFrameSize)"
      )
    }
    guard rawStreamID & 0x8000_0000 == 0 else {
      throw ProtocolViolation(.malformedFrame, "the reserved high bit of the stream id is set")
    }
    guard buffer.readableBytes >= Frame.headerSize + Int(length) else { return nil }

    buffer.moveReaderIndex(forwardBy: Frame.headerSize)
    let payload = buffer.readSlice(length: Int(length))!
    return Frame(
      type: FrameType(rawValue: type),
      flags: FrameFlags(rawValue: flags),
      streamID: rawStreamID,
      payload: payload
    )
  }

  public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> Frame? {
    try decode(buffer: &buffer)
  }
}

/// Writes frames as header plus payload; on the client side, puts the connection preface
/// ahead of the first frame. For pipelines that write ``Frame`` values; ``RPCConnectionHandler``
/// encodes its own frames with ``write(_:into:)`` and needs no encoder after it.
///
/// Frames written between two flushes are gathered into one buffer and passed on as a single
/// write at the flush, so that TLS seals them into one record instead of one record per
/// frame.
public final class FrameEncoderHandler: ChannelOutboundHandler {
  public typealias OutboundIn = Frame
  public typealias OutboundOut = ByteBuffer

  /// Gathered bytes are passed on without waiting for the flush once they reach this size,
  /// which keeps the buffer bounded when a large message is written.
  static let gatherLimit = 64 * 1024

  private var prefacePending: Bool
  private var gathered: ByteBuffer?
  private var gatheredPromise: EventLoopPromise<Void>?

  /// Creates an encoder; `writePreface` for the client side of a connection.
  public init(writePreface: Bool) {
    self.prefacePending = writePreface
  }

  public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
    let frame = unwrapOutboundIn(data)
    let size = Frame.headerSize + frame.payload.readableBytes
    if gathered == nil {
      gathered = context.channel.allocator.buffer(capacity: max(size + (prefacePending ? 8 : 0), 1024))
    }
    if prefacePending {
      prefacePending = false
      gathered!.writeBytes(ConnectionPreface.bytes)
    }
    Self.write(frame, into: &gathered!)
    if let promise {
      if let earlier = gatheredPromise {
        earlier.futureResult.cascade(to: promise)
      } else {
        gatheredPromise = promise
      }
    }
    if gathered!.readableBytes >= Self.gatherLimit {
      passOn(context: context)
    }
  }

  public func flush(context: ChannelHandlerContext) {
    passOn(context: context)
    context.flush()
  }

  public func handlerRemoved(context: ChannelHandlerContext) {
    gathered = nil
    gatheredPromise?.fail(ChannelError.ioOnClosedChannel)
    gatheredPromise = nil
  }

  private func passOn(context: ChannelHandlerContext) {
    guard let buffer = gathered else { return }
    let promise = gatheredPromise
    gathered = nil
    gatheredPromise = nil
    context.write(wrapOutboundOut(buffer), promise: promise)
  }

  /// Appends the encoding of `frame` to `buffer`.
  public static func write(_ frame: Frame, into buffer: inout ByteBuffer) {
    write(frame.type, flags: frame.flags, streamID: frame.streamID, payload: frame.payload, into: &buffer)
  }

  /// Appends the encoding of a frame given by its parts (no `Frame` value, whose payload a
  /// caller would copy in) to `buffer`; a nil payload is an empty one.
  static func write(_ type: FrameType, flags: FrameFlags, streamID: UInt32, payload: ByteBuffer?, into buffer: inout ByteBuffer) {
    // Header and payload in one reservation of the buffer's bytes: one capacity, uniqueness
    // and access check for the frame instead of one for the header and one for the payload.
    let length = payload?.readableBytes ?? 0
    buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: Frame.headerSize + length) { target in
      target.storeBytes(of: UInt32(length).bigEndian, toByteOffset: 0, as: UInt32.self)
      target[4] = type.rawValue
      target[5] = flags.rawValue
      target.storeBytes(of: streamID.bigEndian, toByteOffset: 6, as: UInt32.self)
      if length > 0 {
        payload?.withUnsafeReadableBytes { bytes in
          UnsafeMutableRawBufferPointer(rebasing: target[Frame.headerSize...]).copyMemory(from: bytes)
        }
      }
      return Frame.headerSize + length
    }
  }
}

@available(*, unavailable)
extension FrameEncoderHandler: Sendable {}
