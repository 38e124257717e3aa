package org.mobilellm.demo

import android.app.Activity
import android.os.Bundle
import android.util.Log
import android.view.WindowManager
import android.widget.ScrollView
import android.widget.TextView
import java.io.File
import kotlin.concurrent.thread
import org.mobilellm.core.Benchmark
import org.mobilellm.core.Json
import org.mobilellm.core.Manifest
import org.mobilellm.core.Results

/**
 * Headless benchmark, same definitions as `mobilellm bench`:
 *
 *   adb shell am start -n org.mobilellm.demo/.BenchmarkActivity --es dir /data/local/tmp/mobilellm \
 *       --ei iters 50 --ei warmup 5 --ei threads 4
 *
 * Extras: dir, artifact (only this one; default all in dir), out (results file name in the app's
 * files dir), iters, warmup, threads, prompt_len (P), gen_tokens (N), load_mode (file|mmap|mlock).
 * Writes files/<out> in the results schema, and files/<out>.status ({"state": "running" | "done" |
 * "error", ...}) that `mobilellm device android` polls; logs "MOBILELLM_RESULTS <path>".
 * BenchmarkInstrumentedTest (androidTest) starts this same activity under `am instrument`, with
 * keep_open so that it, not the activity, closes it (BenchmarkRequest: the shared spelling).
 */
class BenchmarkActivity : Activity() {
    private lateinit var view: TextView

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        // A multi-minute run must not outlive the screen timeout: with the screen off the app is a
        // background process on throttled cores, and its timings are not the foreground's.
        window.addFlags(WindowManager.LayoutParams.FLAG_KEEP_SCREEN_ON)
        view = TextView(this).apply { setPadding(24, 24, 24, 24) }
        setContentView(ScrollView(this).apply { addView(view) })
        val dir = File(intent.getStringExtra("dir") ?: DEFAULT_DIR)
        val only = intent.getStringExtra("artifact")
        val out = intent.getStringExtra("out") ?: "results-${DeviceInfo.timestamp().replace(":", "")}.json"
        val cfg = Benchmark.Config().apply {
            iters = intent.getIntExtra("iters", iters)
            warmup = intent.getIntExtra("warmup", warmup)
            threads = intent.getIntExtra("threads", threads)
            promptLen = intent.getIntExtra("prompt_len", promptLen)
            genTokens = intent.getIntExtra("gen_tokens", genTokens)
            loadMode = intent.getStringExtra("load_mode") ?: loadMode
        }
        val keepOpen = intent.getBooleanExtra(BenchmarkRequest.KEEP_OPEN, false)
        thread(name = "mobilellm-benchmark") {
            run(dir, only, out, cfg)
            runOnUiThread {
                window.clearFlags(WindowManager.LayoutParams.FLAG_KEEP_SCREEN_ON)
                if (!keepOpen) finish()
            }
        }
    }

    private fun show(line: String) {
        Log.i(TAG, line)
        runOnUiThread { view.append(line + "\n") }
    }

    private fun status(out: String, vararg kv: Pair<String, Any?>) {
        writeAtomically(BenchmarkRequest.statusFile(this, out), Json.write(linkedMapOf(*kv), 0))
    }

    private fun run(dir: File, only: String?, out: String, cfg: Benchmark.Config) {
        try {
            cfg.check()
            Runtimes.executorchLoadMode(cfg.loadMode)
            val entries = Manifest.scan(dir).filter { only == null || it.file.name == only }
            require(entries.isNotEmpty()) {
                if (only != null) "no manifest $only.manifest.json in $dir" else "no *.manifest.json in $dir"
            }
            val results = Results(DeviceInfo.context(cfg.threads))
            val errors = mutableListOf<Any>()
            for ((i, e) in entries.withIndex()) {
                status(out, "state" to "running", "artifact" to e.file.name, "index" to i.toLong(), "total" to entries.size.toLong())
                show("${e.file.name} (${i + 1}/${entries.size})")
                val m = e.manifest
                val why = e.problem ?: m?.whyNotBenchmarkable()
                if (m == null || why != null) {
                    errors += linkedMapOf("artifact" to e.file.name, "message" to why)
                    show("  skipped: $why")
                    continue
                }
                try {
                    Benchmark.run({ Runtimes.session(e.file, m, cfg.threads, cfg.loadMode) }, m, cfg, AndroidProbe(this),
                        results) { show("  $it") }
                } catch (t: Throwable) {
                    Log.e(TAG, "benchmark of ${e.file.name} failed", t)
                    errors += linkedMapOf("artifact" to e.file.name, "message" to "${e.file.name}: ${t.message ?: t}")
                }
            }
            val file = File(filesDir, out)
            writeAtomically(file, results.toJson())
            show("MOBILELLM_RESULTS ${file.absolutePath} (${results.records().size} records)")
            if (results.records().isEmpty()) {
                status(out, "state" to "error", "message" to errors.joinToString("; ") { (it as Map<*, *>)["message"].toString() })
            } else {
                status(out, "state" to "done", "results" to file.absolutePath, "errors" to errors)
            }
        } catch (t: Throwable) {
            Log.e(TAG, "benchmark failed", t)
            status(out, "state" to "error", "message" to (t.message ?: t.toString()))
            show("error: ${t.message ?: t}")
        }
    }
}
