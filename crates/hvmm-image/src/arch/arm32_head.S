@ hvmm arm32 head: zImage header, the MMU-off boot path in HYP mode (boot
@ tables with LPAE long descriptors, identity map, MMU on), the secondary CPU
@ entry, the HYP exception vectors and the exit path.
@
@ Assembled through `global_asm!` in arm32.rs, which substitutes the
@ constants named in braces (so braces appear nowhere else in this file).
@
@ Registers kept through the primary head (MMU off, no stack):
@   r8   physical address of boot_fixmap_l3 (from just before the MMU is on)
@   r9   CPU index (0 on the primary; the PSCI context id on secondaries)
@   r10  DTB physical address (r2 at entry)
@   r11  physical address of _start (the load address)

    .syntax unified
    .arm
    .arch armv7-a
    .arch_extension virt
    .arch_extension sec

@ A PC-relative address: the physical address while the MMU is off, the
@ virtual address once running at the link address.
.macro adr_l reg, sym
    ldr \reg, .Lal_lit\@
.Lal_pc\@:
    add \reg, pc, \reg
    b .Lal_end\@
.Lal_lit\@:
    .word \sym - (.Lal_pc\@ + 8)
.Lal_end\@:
.endm

@ Descriptor bits, low word: valid | page, AttrIndx 7, AP[1], SH inner, AF
@ (0x75f); AP[2] read-only 0x80. High word: XN (bit 54) is bit 22.
.equ PTE_NORMAL_PAGE, 0x75f
.equ PTE_RO, 0x80
.equ PTE_TABLE, 3
.equ PTE_XN_HI, 0x400000

@ ---------------------------------------------------------------------------
@ Offset 0: the zImage header.
    .section .text.header, "ax"
    .global _start
_start:
    .rept 8
    mov r0, r0
    .endr
    b primary_entry                 @ 0x20
    .word 0x016f2818                @ 0x24: zImage magic
    .word 0                         @ 0x28: start (0: position independent)
    .word _zimage_size              @ 0x2c: end (size of the loaded file)
    .word 0x04030201                @ 0x30: endianness marker (little)

@ The MMU-enable code, in the image's first page (the linker checks). The
@ head identity-maps the page it runs from, this one or the image's last
@ page, which receives a copy of these four instructions (see
@ build_boot_tables). r0 = HSCTLR, r1 = where to continue (a link address).
    .balign 16
enable_mmu_code:
    dsb
    mcr p15, 4, r0, c1, c0, 0       @ HSCTLR
    isb
    bx r1

@ ---------------------------------------------------------------------------
@ The primary CPU, MMU off, at the load address, HYP mode.
    .section .text.head, "ax"
primary_entry:
    mov r10, r2                     @ DTB
    mov r9, #0                      @ CPU 0
    mrs r0, cpsr
    and r0, r0, #0x1f
    cmp r0, #0x1a                   @ HYP
    beq 1f
    adr_l r0, msg_not_hyp
    bl early_puts
    mrs r0, cpsr
    and r0, r0, #0x1f
    bl early_puthex
    adr_l r0, msg_close
    bl early_puts
    mov r0, #{EXIT_WRONG_MODE}
    b hvmm_exit
1:  cpsid aif
    adr_l r0, hyp_vectors           @ early vectors, at their physical address
    mcr p15, 4, r0, c12, c0, 0      @ HVBAR
    isb
    adr_l r11, _start
    bl build_boot_tables
    mov r9, #0                      @ (build_boot_tables uses r9)
    adr_l r8, boot_fixmap_l3
    bl cpu_init
    ldr r1, =primary_switched
    b enable_mmu

@ Builds the boot tables at their physical addresses: the image at its link
@ address with 4 KiB pages (text and init RX, rodata RO, the rest RW, XN),
@ exactly the image, one L3 table per 2 MiB; and a one-page identity map of
@ the page the MMU is turned on from. That page is the image's first, or,
@ when the image is loaded less than its size above its link address (the
@ first page's VA would then be a page of the image), its last, which gets
@ a copy of enable_mmu_code. The identity map follows the image's tables as
@ long as its walk shares them and uses tables of its own below. Records in
@ boot_idmap: the link VA of the first entry written for it (0: none, the
@ image runs at its link address) and that entry's value, and the physical
@ address of the MMU-enable code (each as a 64-bit word).
build_boot_tables:
    adr_l r0, __pgtables_start
    adr_l r1, __pgtables_end
    mov r2, #0
    mov r3, #0
0:  strd r2, r3, [r0], #8
    cmp r0, r1
    blo 0b

    @ L1[0] -> L2, L2[1..] -> one L3 per 2 MiB of the image.
    mov r3, #0
    adr_l r0, boot_l1
    adr_l r2, boot_l2
    orr r2, r2, #PTE_TABLE
    strd r2, r3, [r0]
    adr_l r0, boot_l2
    adr_l r1, boot_l3
    ldr r4, =_start
    ldr r5, =_end
    ubfx r6, r4, #21, #9
7:  orr r2, r1, #PTE_TABLE
    add r7, r0, r6, lsl #3
    strd r2, r3, [r7]
    add r1, r1, #4096
    add r6, r6, #1
    add r4, r4, #0x200000
    cmp r4, r5
    blo 7b

    adr_l r0, boot_l3               @ the L3 tables are consecutive pages
    mov r1, r11                     @ PA
    ldr r2, =_start                 @ VA
    ldr r3, =_end
    ldr r4, =_etext
    ldr r5, =_erodata
    ldr r9, =__init_end
    movw r12, #PTE_NORMAL_PAGE
1:  orr r6, r1, r12                 @ low word
    mov r7, #0                      @ high word
    cmp r2, r4
    blo 2f
    cmp r2, r5
    blo 4f
    cmp r2, r9
    blo 2f
    mov r7, #PTE_XN_HI              @ data, BSS, tables: RW, execute-never
    b 3f
4:  mov r7, #PTE_XN_HI              @ rodata: read-only, execute-never
2:  orr r6, r6, #PTE_RO             @ text and init: read-only, executable
3:  strd r6, r7, [r0], #8
    add r1, r1, #4096
    add r2, r2, #4096
    cmp r2, r3
    blo 1b

    @ The page the MMU is turned on from: r6 its PA (= its identity VA),
    @ r9 the PA of the code in it.
    ldr r2, =_start
    sub r2, r11, r2                 @ load - link
    ldr r3, =_image_size
    adr_l r9, enable_mmu_code
    bic r6, r9, #0xff0
    bic r6, r6, #0xf
    mov r4, #0                      @ link VA of the first entry written
    mov r5, #0                      @ its value (low word; the high word is 0)
    cmp r2, #0
    beq 50f                         @ at the link address: no identity map
    cmp r2, r3
    bhs 5f
    add r6, r11, r3                 @ the last page
    sub r6, r6, #4096
    ldrd r0, r1, [r9]
    strd r0, r1, [r6]
    ldrd r0, r1, [r9, #8]
    strd r0, r1, [r6, #8]
    mcr p15, 0, r6, c7, c6, 1       @ DCIMVAC: no stale line over the copy
    dsb
    mov r9, r6

5:  movw r12, #(PTE_NORMAL_PAGE | PTE_RO)
    orr r12, r12, r6                @ the RX page descriptor for it (low word)
    adr_l r0, boot_l1               @ the table walked (PA)
    adr_l r8, boot_id_l2            @ the fresh table for the next level
    mov r3, #30                     @ this level's VA shift
10: lsr r1, r6, r3
    ubfx r1, r1, #0, #9
    add r1, r0, r1, lsl #3          @ the entry (PA)
    cmp r3, #12
    beq 30f
    ldr r7, [r1]
    tst r7, #1
    beq 20f
    bic r0, r7, #0xff0              @ shared with the image: descend
    bic r0, r0, #0xf
    b 25f
20: orr r7, r8, #PTE_TABLE          @ a table of its own
    mov r2, #0
    str r7, [r1]
    str r2, [r1, #4]
    mov r0, r8
    cmp r4, #0
    bne 25f
    sub r4, r1, r11
    ldr r2, =_start
    add r4, r4, r2
    mov r5, r7
25: add r8, r8, #4096
    sub r3, r3, #9
    b 10b
30: mov r2, #0
    str r12, [r1]                   @ level 3: the page (never an image page)
    str r2, [r1, #4]
    cmp r4, #0
    bne 50f
    sub r4, r1, r11
    ldr r2, =_start
    add r4, r4, r2
    mov r5, r12

50: adr_l r0, boot_idmap
    mov r1, #0
    str r4, [r0]
    str r1, [r0, #4]
    str r5, [r0, #8]
    str r1, [r0, #12]
    str r9, [r0, #16]
    str r1, [r0, #20]

    @ The tables were written with the MMU off (non-cacheable): drop any
    @ stale cache line over them before the cacheable walker reads them.
    dsb
    adr_l r0, __pgtables_start
    adr_l r1, __pgtables_end
    mrc p15, 0, r2, c0, c0, 1       @ CTR
    ubfx r2, r2, #16, #4
    mov r3, #4
    lsl r3, r3, r2                  @ D-cache line size
6:  mcr p15, 0, r0, c7, c6, 1       @ DCIMVAC
    add r0, r0, r3
    cmp r0, r1
    blo 6b
    dsb
    bx lr

@ HMAIR, HTCR, HTTBR for the boot tables; local TLB and I-cache invalidated.
cpu_init:
    ldr r0, ={HMAIR0}
    mcr p15, 4, r0, c10, c2, 0
    ldr r0, ={HMAIR1}
    mcr p15, 4, r0, c10, c2, 1
    ldr r0, ={HTCR}
    mcr p15, 4, r0, c2, c0, 2
    adr_l r0, boot_l1
    mov r1, #0
    mcrr p15, 4, r0, r1, c2         @ HTTBR
    isb
    mcr p15, 4, r0, c8, c7, 0       @ TLBIALLH
    mcr p15, 0, r0, c7, c5, 0       @ ICIALLU
    dsb
    isb
    bx lr

@ A secondary CPU, started by PSCI CPU_ON with r0 = its index, MMU off.
    .global secondary_entry
secondary_entry:
    mov r9, r0
    mrs r0, cpsr
    and r0, r0, #0x1f
    cmp r0, #0x1a
    beq 1f
    adr_l r0, msg_not_hyp
    bl early_puts
    mov r0, #{EXIT_WRONG_MODE}
    b hvmm_exit
1:  cpsid aif
    adr_l r0, hyp_vectors
    mcr p15, 4, r0, c12, c0, 0
    isb
    cmp r9, #{MAX_CPUS}
    blo 2f
    adr_l r0, msg_too_many
    bl early_puts
    mov r0, #{EXIT_SMP}
    b hvmm_exit
2:  bl cpu_init
    ldr r1, =secondary_switched
    b enable_mmu

@ Turns the MMU on (boot tables loaded by cpu_init) through the identity-
@ mapped MMU-enable code the head chose. r1 = where to continue, a link
@ address. MMU off.
enable_mmu:
    adr_l r2, boot_idmap
    ldr r2, [r2, #16]
    ldr r0, ={HSCTLR}
    bx r2

@ Early console: the PL011 at its physical address (MMU off only).
early_putc:                         @ r0: the character; clobbers r1, r2
    mov r1, #0x09000000
1:  ldr r2, [r1, #0x18]
    tst r2, #0x20                   @ TXFF
    bne 1b
    strb r0, [r1]
    bx lr

early_puts:                         @ r0: NUL-terminated string; clobbers r0-r5
    mov r5, lr
    mov r4, r0
1:  ldrb r0, [r4], #1
    cmp r0, #0
    beq 2f
    bl early_putc
    b 1b
2:  bx r5

early_puthex:                       @ r0: the value; clobbers r0-r5
    mov r5, lr
    mov r3, r0
    mov r0, #0x30                   @ '0'
    bl early_putc
    mov r0, #0x78                   @ 'x'
    bl early_putc
    mov r4, #28
1:  lsr r0, r3, r4
    and r0, r0, #0xf
    cmp r0, #9
    addhi r0, r0, #0x27             @ 'a' - '0' - 10
    add r0, r0, #0x30
    bl early_putc
    subs r4, r4, #4
    bge 1b
    bx r5

    .ltorg

@ ---------------------------------------------------------------------------
@ ---------------------------------------------------------------------------
@ Running at the link address.
    .section .text.boot, "ax"
primary_switched:
    bl drop_idmap
    orr r2, r8, #PTE_TABLE          @ link the fixmap L3 (its boot_l2 entry)
    mov r3, #0
    ldr r1, =boot_l2
    add r1, r1, #{FIXMAP_L2_OFF}
    strd r2, r3, [r1]
    dsb
    isb
    ldr r0, =hyp_vectors
    mcr p15, 4, r0, c12, c0, 0
    isb
    ldr r0, =__bss_start
    ldr r1, =__bss_end
    mov r2, #0
    mov r3, #0
2:  cmp r0, r1
    bhs 3f
    strd r2, r3, [r0], #8
    b 2b
3:  mov r0, #0
    mcr p15, 4, r0, c13, c0, 2      @ HTPIDR: this CPU's index, for the vectors
    ldr r0, =boot_stacks
    add sp, r0, #{STACK_SIZE}
    mov r0, r10                     @ dtb_pa (u64: r0 low, r1 high)
    mov r1, #0
    mov r2, #0                      @ cpu
    bl start_hvmm
    mov r0, #{EXIT_RETURNED}
    b hvmm_exit

secondary_switched:
    bl drop_idmap                   @ before the root switch (Rust)
    ldr r0, =hyp_vectors
    mcr p15, 4, r0, c12, c0, 0
    isb
    mcr p15, 4, r9, c13, c0, 2      @ HTPIDR: this CPU's index, for the vectors
    ldr r0, =boot_stacks
    mov r1, #{STACK_SIZE}
    mla r0, r9, r1, r0
    add sp, r0, r1
    mov r0, r9
    bl start_secondary
    mov r0, #{EXIT_RETURNED}
    b hvmm_exit

@ Removes the boot tables' identity entry (break) and invalidates this CPU's
@ HYP TLB, so that nothing it cached maps an address the runtime tables map
@ otherwise. Running at the link address; clobbers r0-r3.
drop_idmap:
    ldr r0, =boot_idmap
    ldr r1, [r0]
    cmp r1, #0
    beq 1f
    mov r2, #0
    mov r3, #0
    dsb
    strd r2, r3, [r1]
    dsb
    mcr p15, 4, r0, c8, c7, 0       @ TLBIALLH
    dsb
    isb
1:  bx lr

@ hvmm_exit(code): semihosting SYS_EXIT_EXTENDED with the code, else PSCI
@ SYSTEM_OFF. Works with the MMU on or off (PC-relative only). Never returns.
    .global hvmm_exit
hvmm_exit:
    mov r4, r0
    adr_l r1, exit_in_progress
    mov r2, #1
    str r2, [r1]
    adr_l r1, exit_block
    movw r2, #0x0026
    movt r2, #0x2                   @ ADP_Stopped_ApplicationExit
    str r2, [r1]
    str r4, [r1, #4]
    mov r0, #0x20                   @ SYS_EXIT_EXTENDED
    svc 0x123456
psci_off:
    movw r0, #0x0008
    movt r0, #0x8400                @ PSCI SYSTEM_OFF
    smc #0
1:  wfi
    b 1b

    .ltorg

@ ---------------------------------------------------------------------------
@ HYP exception vectors (HVBAR). r0 = the kind, the vector's index.
    .section .text.vectors, "ax"
    .balign 32
    .global hyp_vectors
hyp_vectors:
    .irp kind, 0, 1, 2, 3, 4, 5, 6, 7
    b hyp_vec_\kind
    .endr
    .irp kind, 0, 1, 2, 3, 4, 5, 6, 7
hyp_vec_\kind:
    .if \kind == 5
    b guest_trap32                  @ Hyp Trap: a guest's, r0 is the guest's
    .else
    mov r0, #\kind
    b hyp_vector_common
    .endif
    .endr

@ A trap from the guest (HVC, a trapped SMC, a stage-2 abort): save its
@ r0-r12 and LR (LR_usr: HYP mode shares it) on this CPU's HYP stack, let
@ Rust serve it, restore, return.
guest_trap32:
    push {{r0-r12, lr}}
    mov r0, sp
    ldr r1, =hvmm_guest_trap
    blx r1
    pop {{r0-r12, lr}}
    eret

@ guest_eret(regs, sp): r0-r12 from regs[0..13], LR_usr = 0, SP_hyp = sp,
@ eret (ELR_hyp and SPSR_hyp are set).
    .global guest_eret
guest_eret:
    mov sp, r1
    mov lr, #0
    ldm r0, {{r0-r12}}
    eret

hyp_vector_common:
    adr_l r1, exit_in_progress      @ an exception while exiting (no
    ldr r1, [r1]                    @ semihosting): power off instead
    cmp r1, #0
    bne psci_off
    adr_l r5, in_exception          @ a fault while reporting one: exit
    ldr r6, [r5]
    cmp r6, #0
    bne double_fault
    mov r6, #1
    str r6, [r5]
    mrc p15, 4, r1, c5, c2, 0       @ HSR
    cmp r0, #3                      @ prefetch abort: HIFAR, else HDFAR
    mrceq p15, 4, r2, c6, c0, 2
    mrcne p15, 4, r2, c6, c0, 0
    mrs r3, ELR_hyp
    mrs r4, spsr                    @ SPSR_hyp (the banked form is Monitor-only)
    mrc p15, 4, r5, c1, c0, 0       @ HSCTLR
    tst r5, #1
    beq hyp_early_exception         @ MMU off: no Rust yet
    @ The report never returns: it runs from the top of this CPU's own
    @ stack slot (HTPIDR: its index), so that an overflow into the guard
    @ page below the stack, SP pointing there, is still reported.
    mrc p15, 4, r6, c13, c0, 2
    cmp r6, #{MAX_CPUS}
    bhs 1f
    ldr r7, =boot_stacks
    mov r8, #{STACK_SIZE}
    mla r7, r6, r8, r7
    add sp, r7, r8
1:  bic sp, sp, #7
    sub sp, sp, #8
    str r4, [sp]                    @ 5th argument: SPSR
    ldr r5, =hvmm_exception
    blx r5
    b double_fault

double_fault:
    mov r0, #{EXIT_EXCEPTION}
    b hvmm_exit

hyp_early_exception:
    mov r6, r0
    mov r7, r1
    mov r8, r2
    mov r9, r3
    adr_l r0, msg_early_exc
    bl early_puts
    mov r0, r6
    bl early_puthex
    adr_l r0, msg_hsr
    bl early_puts
    mov r0, r7
    bl early_puthex
    adr_l r0, msg_far
    bl early_puts
    mov r0, r8
    bl early_puthex
    adr_l r0, msg_elr
    bl early_puts
    mov r0, r9
    bl early_puthex
    adr_l r0, msg_nl
    bl early_puts
    mov r0, #{EXIT_EXCEPTION}
    b hvmm_exit

    .ltorg

@ ---------------------------------------------------------------------------
    .section .rodata.head, "a"
msg_not_hyp:    .asciz "hvmm: not entered in HYP mode (CPSR.M "
msg_close:      .asciz "): cannot run\r\n"
msg_too_many:   .asciz "hvmm: secondary CPU index beyond MAX_CPUS\r\n"
msg_early_exc:  .asciz "hvmm: exception with the MMU off: vector "
msg_hsr:        .asciz " HSR="
msg_far:        .asciz " HDFAR/HIFAR="
msg_elr:        .asciz " ELR_hyp="
msg_nl:         .asciz "\r\n"

    .section .data.hvmm_head, "aw"
    .balign 16
exit_block:       .word 0, 0
exit_in_progress: .word 0
in_exception:     .word 0

@ Boot page tables: zeroed and filled by the head (not file-backed).
    .section .pgtables, "aw", %nobits
    .balign 4096
    .global boot_root, boot_l1, boot_l2, boot_l3, boot_fixmap_l3
boot_root:                          @ the root table (HTTBR)
boot_l1:        .space 4096
boot_l2:        .space 4096
boot_l3:        .space 4096 * {IMAGE_L3_TABLES}
boot_id_l2:     .space 4096
boot_id_l3:     .space 4096
boot_fixmap_l3: .space 4096
@ Runtime tables, filled by the shared boot sequence (setup_pagetables):
@ CPU 0's root (L1), L2 (VA 0-1 GiB), the image's L3s.
    .global runtime_root, runtime_l2, runtime_l3
runtime_root:   .space 4096
runtime_l2:     .space 4096
runtime_l3:     .space 4096 * {IMAGE_L3_TABLES}
@ The head's identity-map record (64-bit words): the entry's link VA, its
@ value, the PA of the MMU-enable code.
    .global boot_idmap
boot_idmap:     .space 24

@ The CPUs' boot stacks: one slot of STACK_SIZE each, whose first page is a
@ guard page (the runtime tables leave it unmapped) and the rest the stack.
    .section .bss.stacks, "aw", %nobits
    .balign 4096
    .global boot_stacks, boot_stacks_end, hvmm_stack_slot
boot_stacks:    .space {STACK_SIZE} * {MAX_CPUS}
boot_stacks_end:
    .set hvmm_stack_slot, {STACK_SIZE}
