/* `rcupending bench overhead`'s baseline probe: an fentry program on kvfree_call_rcu that does
 * nothing, so the trampoline's own cost is told apart from the collector's work. */
KFUNC_PROBE_SYM(KVFREE_SYM, void *head)
{
	return 0;
}
