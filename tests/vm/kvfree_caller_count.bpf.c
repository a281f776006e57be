/* Independent count for the VM tests: kvfree() calls whose caller lies in [CALLER_START,
 * CALLER_END) (-D, from kallsyms), read from the return address on the stack at entry.
 * rcu_pending's __process_finished_items() calls kvfree() once per list-fallback object. */
BPF_ARRAY(kvfree_from_caller, u64, 1);

int kprobe__kvfree(struct pt_regs *ctx)
{
	u64 ret = 0;
	u32 zero = 0;

	bpf_probe_read_kernel(&ret, sizeof(ret), (void *)PT_REGS_SP(ctx));
	if (ret >= CALLER_START && ret < CALLER_END) {
		u64 *c = kvfree_from_caller.lookup(&zero);
		if (c)
			__sync_fetch_and_add(c, 1);
	}
	return 0;
}
