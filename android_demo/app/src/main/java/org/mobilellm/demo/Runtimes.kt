package org.mobilellm.demo

import ai.onnxruntime.OnnxJavaType
import ai.onnxruntime.OnnxTensor
import ai.onnxruntime.OrtEnvironment
import ai.onnxruntime.OrtSession
import ai.onnxruntime.TensorInfo
import java.io.File
import java.io.FileInputStream
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.LongBuffer
import org.mobilellm.core.Benchmark
import org.mobilellm.core.Manifest
import org.mobilellm.core.OnnxContract
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor

/** Opens an artifact in the runtime its manifest calls for. */
object Runtimes {
    fun session(file: File, m: Manifest, threads: Int, loadMode: String): Benchmark.Session =
        when (m.runtime()) {
            "executorch" -> ExecuTorchSession(file.path, threads, executorchLoadMode(loadMode))
            "onnxruntime" -> onnx(file, m, threads)
            else -> throw IllegalArgumentException(m.whyNotRunnable())
        }

    /**
     * An ONNX artifact: its onnxruntime-genai directory through the generator when the host pushed it
     * beside the file (manifest `genai_dir`), else the file in a plain ONNX Runtime session.
     */
    fun onnx(file: File, m: Manifest, threads: Int): Benchmark.Session =
        m.genaiDirIn(file.parentFile!!)?.let { GenaiLlmSession(it, m, threads) } ?: OrtLlmSession(file, m, threads)

    fun executorchLoadMode(name: String): Int = when (name) {
        "file" -> Module.LOAD_MODE_FILE
        "mmap" -> Module.LOAD_MODE_MMAP
        "mlock" -> Module.LOAD_MODE_MMAP_USE_MLOCK_IGNORE_ERRORS
        else -> throw IllegalArgumentException("load_mode must be file, mmap or mlock, got $name")
    }
}

/**
 * A `.pte` with `forward(tokens int64 [1,T], input_pos int64 [1]) -> logits float32 [1,1,vocab]`
 * (the last position's; `[1,T,vocab]` from `--full-logits`: lastLogits reads the last row of either)
 * and its KV cache inside the program. load: `Module.load` (reads the program); init:
 * `loadMethod("forward")` (XNNPACK delegate init and weight packing).
 */
class ExecuTorchSession(private val path: String, private val threads: Int, private val loadMode: Int) :
    Benchmark.Session {
    private var module: Module? = null
    private var output: Tensor? = null

    override fun load() {
        module = Module.load(path, loadMode, threads)
    }

    override fun init() {
        checkNotNull(module) { "init before load" }.loadMethod("forward")
    }

    // The timed part: forward only. The logits stay in the output tensor (one row by default; 16 MB
    // at T = 128 from a --full-logits export) until lastLogits copies them, after the clock.
    override fun run(ids: LongArray, startPos: Int, commit: Boolean) {
        val m = checkNotNull(module) { "forward before load" }
        val tokens = Tensor.fromBlob(ids, longArrayOf(1, ids.size.toLong()))
        val pos = Tensor.fromBlob(longArrayOf(startPos.toLong()), longArrayOf(1))
        output = m.forward(EValue.from(tokens), EValue.from(pos))[0].toTensor()
    }

    override fun lastLogits(): FloatArray {
        val logits = checkNotNull(output) { "lastLogits before run" }
        val shape = logits.shape() // [1, 1, vocab] or [1, T, vocab]
        val vocab = shape[shape.size - 1].toInt()
        val all = logits.dataAsFloatArray
        return all.copyOfRange(all.size - vocab, all.size)
    }

    override fun close() {
        output = null
        module?.destroy()
        module = null
    }
}

/**
 * An `.onnx` or `.ort` file in a plain ONNX Runtime session, run under the contract its input names
 * say (OnnxContract, as the host's OnnxSession reads them). A current export keeps one buffer of
 * max_seq_len positions per cache tensor, passed as its `past_key_values.N.*` input and, pinned, as
 * its `present.N.*` output: the GroupQueryAttention node writes the step's positions in place and
 * attends to the first `attention_mask` positions, so a rewind is only a shorter mask (the host binds
 * the same buffer twice with IO binding; onnxruntime-genai calls it past_present_share_buffer). Older
 * exports grow their cache (present = past + T positions, kept as the next past). load: reading the
 * model bytes; init: creating the OrtSession from them, and the cache.
 */
class OrtLlmSession(private val file: File, private val m: Manifest, private val threads: Int) : Benchmark.Session {
    private val env: OrtEnvironment = OrtEnvironment.getEnvironment()
    private var bytes: ByteArray? = null
    private var session: OrtSession? = null
    private lateinit var contract: OnnxContract
    private var past: List<OnnxTensor> = emptyList() // shared: the buffers; growing: the current past
    private var pastOwned = true // our own tensors, else owned by `held`
    private var held: OrtSession.Result? = null // growing: the run whose presents are the past
    private var pastLen = 0
    private var lastResult: OrtSession.Result? = null // outputs not kept as the cache, until the next run
    private var lastLogitsTensor: OnnxTensor? = null

    override fun load() {
        // Reading into the Java heap is the definition of load; a model larger than a third of
        // the heap is read through (same disk cost) and the session opens it by path instead.
        if (file.length() < Runtime.getRuntime().maxMemory() / 3) {
            bytes = file.readBytes()
        } else {
            FileInputStream(file).channel.use { ch ->
                val buf = ByteBuffer.allocateDirect(1 shl 22)
                while (ch.read(buf) > 0) buf.clear()
            }
        }
    }

    override fun init() {
        val opts = OrtSession.SessionOptions()
        opts.setIntraOpNumThreads(threads)
        opts.setOptimizationLevel(OrtSession.SessionOptions.OptLevel.ALL_OPT)
        val b = bytes
        val s = if (b != null) env.createSession(b, opts) else env.createSession(file.path, opts)
        bytes = null
        session = s
        contract = OnnxContract.of(s.inputNames.toList(), m.executedBlocks, file.name)
        resetCache()
    }

    override fun settings(): Map<String, Any> =
        mapOf("onnx_api" to "OrtSession", "onnx_cache" to if (contract.sharesCache()) "shared" else "growing")

    /** A cache tensor of `positions` positions in direct memory, which the tensor wraps without a copy. */
    private fun cacheTensor(name: String, positions: Int): OnnxTensor {
        val info = session!!.inputInfo[name]!!.info as TensorInfo
        val shape = longArrayOf(1, m.nKvHeads.toLong(), positions.toLong(), m.headDim.toLong())
        val n = m.nKvHeads * positions * m.headDim
        return if (info.type == OnnxJavaType.FLOAT16) {
            OnnxTensor.createTensor(env, ByteBuffer.allocateDirect(2 * n).order(ByteOrder.nativeOrder()), shape, OnnxJavaType.FLOAT16)
        } else {
            OnnxTensor.createTensor(env, ByteBuffer.allocateDirect(4 * n).order(ByteOrder.nativeOrder()).asFloatBuffer(), shape)
        }
    }

    private fun releaseCache() {
        if (pastOwned) past.forEach { it.close() }
        held?.close()
        held = null
        past = emptyList()
    }

    private fun resetCache() {
        releaseCache()
        val positions = contract.initialCachePositions(m.maxSeqLen)
        past = contract.past.map { cacheTensor(it, positions) }
        pastOwned = true
        pastLen = 0
    }

    // The timed part: the session run. The logits are read in lastLogits, after the clock
    // (OnnxTensor.getFloatBuffer copies the whole output: [1, 1, vocab] by default, [1, T, vocab] from --full-logits).
    override fun run(ids: LongArray, startPos: Int, commit: Boolean) {
        val s = checkNotNull(session) { "forward before init" }
        check(startPos + ids.size <= m.maxSeqLen) { "positions up to ${startPos + ids.size} do not fit max_seq_len ${m.maxSeqLen}" }
        if (!contract.sharesCache() && startPos == 0 && pastLen != 0) resetCache()
        if (contract.sharesCache()) {
            check(startPos <= pastLen) { "the ONNX cache holds $pastLen positions; cannot run at position $startPos" }
        } else {
            check(startPos == pastLen) { "the ONNX cache holds $pastLen positions; cannot run at position $startPos" }
        }
        lastResult?.close()
        lastResult = null
        lastLogitsTensor = null
        val tokens = OnnxTensor.createTensor(env, LongBuffer.wrap(ids), longArrayOf(1, ids.size.toLong()))
        val second = OnnxTensor.createTensor(
            env, LongBuffer.wrap(contract.secondValues(startPos, ids.size)), contract.secondShape(startPos, ids.size))
        val inputs = HashMap<String, OnnxTensor>()
        inputs[contract.tokens] = tokens
        inputs[contract.second] = second
        contract.past.forEachIndexed { i, n -> inputs[n] = past[i] }
        val result = try {
            if (contract.sharesCache()) {
                // each present output pinned to its past buffer: written in place, nothing allocated or copied
                s.run(inputs, setOf(LOGITS), contract.present.zip(past).toMap())
            } else {
                s.run(inputs)
            }
        } finally {
            tokens.close()
            second.close()
        }
        lastLogitsTensor = result.get(LOGITS).get() as OnnxTensor
        when {
            contract.sharesCache() -> {
                lastResult = result // owns the logits only: the pinned buffers stay ours
                pastLen = if (commit) startPos + ids.size else minOf(pastLen, startPos)
            }
            commit -> {
                // keep the presents as the next past without copying: the Result owns them (and the logits)
                val presents = contract.present.map { result.get(it).get() as OnnxTensor }
                releaseCache()
                past = presents
                pastOwned = false
                held = result
                pastLen = startPos + ids.size
            }
            else -> lastResult = result
        }
    }

    override fun lastLogits(): FloatArray {
        val logits = checkNotNull(lastLogitsTensor) { "lastLogits before run" }
        val shape = logits.info.shape // [1, 1, vocab] (the default export) or [1, T, vocab] (--full-logits)
        val vocab = shape[shape.size - 1].toInt()
        val fb = logits.floatBuffer
        val last = FloatArray(vocab)
        fb.position(fb.limit() - vocab)
        fb.get(last)
        return last
    }

    override fun close() {
        lastResult?.close()
        lastResult = null
        lastLogitsTensor = null
        releaseCache()
        session?.close()
        session = null
    }

    companion object {
        const val LOGITS = "logits"
    }
}
