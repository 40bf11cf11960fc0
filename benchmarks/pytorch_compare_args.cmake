# ctest bench.pytorch_compare_args: pytorch_compare.py refuses a bad command line
# with a clear message and a non-zero exit, before it imports PyTorch (so this
# runs the same with PyTorch installed or not).
function(expect_refusal message)
  execute_process(COMMAND ${PYTHON} ${SCRIPT} ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(rc EQUAL 0)
    message(FATAL_ERROR "pytorch_compare.py ${ARGN}: exit 0, expected a refusal")
  endif()
  if(NOT err MATCHES "${message}")
    message(FATAL_ERROR "pytorch_compare.py ${ARGN}: expected '${message}' on stderr, got '${err}'")
  endif()
endfunction()

expect_refusal("unknown layer\\(s\\) densenet121.b9.l1" --layers densenet121.b1.l6,densenet121.b9.l1)
expect_refusal("--threads takes positive integers" --threads 1,0)
expect_refusal("--min-time must be > 0" --min-time 0)
expect_refusal("cannot read bnff_bench JSON ${OUT}/absent.json" --bnff ${OUT}/absent.json)
file(WRITE ${OUT}/not_json.json "cpl_fwd 12 ms\n")
expect_refusal("cannot read bnff_bench JSON ${OUT}/not_json.json" --bnff ${OUT}/not_json.json)
