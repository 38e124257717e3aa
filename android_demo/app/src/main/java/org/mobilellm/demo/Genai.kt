package org.mobilellm.demo

import ai.onnxruntime.genai.Config
import ai.onnxruntime.genai.Generator
import ai.onnxruntime.genai.GeneratorParams
import ai.onnxruntime.genai.Model
import java.io.File
import org.mobilellm.core.Benchmark
import org.mobilellm.core.Manifest

/**
 * An ONNX artifact's `<name>.genai/` directory (model.onnx, genai_config.json, tokenizer files; written
 * beside the .onnx by the export) through onnxruntime-genai's generator, as the host's GenaiSession
 * (export/genai.py) runs it. load: `Model` (reads genai_config.json and creates the ONNX Runtime
 * session; the benchmark's thread count is overlaid on the config's); init: `GeneratorParams` +
 * `Generator` (the cache: one buffer of max_seq_len positions per tensor, shared by past and present).
 * run: `rewindTo(startPos)` when the generator holds more, then `appendTokens`, which runs the model.
 *
 * onnxruntime-genai's Java API gives no logits (`Generator.getOutput` returns a `Tensor` with a type
 * and a shape but no data accessor), so lastLogits is null and nextToken is the generator's own
 * greedy choice: `generateNextToken` then `getLastTokenInSequence(0)` (genai_config: do_sample false,
 * top_k 1). The chosen token joins the generator's sequence unrun; the next run rewinds over it and
 * appends it, so every step is one model run, as in the plain session.
 */
class GenaiLlmSession(private val dir: File, private val m: Manifest, private val threads: Int) : Benchmark.Session {
    private var config: Config? = null
    private var model: Model? = null
    private var params: GeneratorParams? = null
    private var generator: Generator? = null
    private var held = 0L // positions whose cache is valid, as the session counts them (GenaiSession's _len)

    override fun load() {
        val c = Config(dir.path)
        c.overlay("""{"model": {"decoder": {"session_options": {"intra_op_num_threads": $threads}}}}""")
        config = c
        model = Model(c)
    }

    override fun init() {
        val mdl = checkNotNull(model) { "init before load" }
        val p = GeneratorParams(mdl)
        p.setSearchOption("max_length", m.maxSeqLen.toDouble())
        params = p
        generator = Generator(mdl, p)
        held = 0
    }

    override fun settings(): Map<String, Any> = mapOf("onnx_api" to "onnxruntime-genai Generator", "genai_dir" to dir.name)

    // The timed part: appendTokens runs the model on `ids` (a rewind first is a length change only).
    override fun run(ids: LongArray, startPos: Int, commit: Boolean) {
        val g = checkNotNull(generator) { "forward before init" }
        check(startPos <= held) { "the generator holds $held positions; cannot run at position $startPos" }
        if (startPos < g.tokenCount()) g.rewindTo(startPos.toLong())
        g.appendTokens(IntArray(ids.size) { ids[it].toInt() })
        held = if (commit) startPos + ids.size.toLong() else minOf(held, startPos.toLong())
    }

    override fun lastLogits(): FloatArray? = null

    override fun nextToken(): Long {
        val g = checkNotNull(generator) { "nextToken before run" }
        check(g.tokenCount() < m.maxSeqLen) {
            "onnxruntime-genai chooses no token once the sequence holds max_seq_len (${m.maxSeqLen}) positions"
        }
        g.generateNextToken()
        return g.getLastTokenInSequence(0).toLong()
    }

    override fun close() {
        generator?.close()
        params?.close()
        model?.close()
        config?.close()
        generator = null
        params = null
        model = null
        config = null
    }
}
