# ctest bench.report_smoke: a short bnff_bench run (the read ceiling and every
# family at the smallest composite layer, two repetitions so the median path is
# taken), then report.py on its JSON. Fails if either step fails or the report
# lacks the read ceiling.
file(REMOVE_RECURSE ${OUT})
file(MAKE_DIRECTORY ${OUT})
execute_process(
  COMMAND ${BENCH} "--benchmark_filter=^ceiling_read/|/densenet121[.]b4[.]l16[./]" --benchmark_min_time=0.01
          --benchmark_repetitions=2 --benchmark_out=${OUT}/bench.json --benchmark_out_format=json
  OUTPUT_FILE ${OUT}/bench.txt
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "bnff_bench failed (${rc}), see ${OUT}/bench.txt")
endif()
execute_process(COMMAND ${PYTHON} ${REPORT} ${OUT}/bench.json --out ${OUT} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "report.py failed (${rc})")
endif()
file(READ ${OUT}/report.md report)
if(NOT report MATCHES "ceiling_read` \\(GB/s\\) \\| [0-9]")
  message(FATAL_ERROR "report.md has no measured read ceiling")
endif()
