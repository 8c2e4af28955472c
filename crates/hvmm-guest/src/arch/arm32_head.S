@ hvmm-guest arm32 head: the zImage header, the MMU-off entry of the primary
@ CPU in SVC mode (LPAE boot tables, MMU on, jump to the link address) and
@ of the secondary CPUs (PSCI CPU_ON), and the exception vectors.
@
@ Assembled through `global_asm!` in arm32.rs, which substitutes the
@ constants named in braces (so braces appear nowhere else in this file).
@
@ Registers kept through the primary head (MMU off, no stack):
@   r9   CPU index (0 on the primary; the PSCI context id on secondaries)
@   r10  DTB address (r2 at entry)
@   r11  physical address of _start (the load address)

    .syntax unified
    .arm
    .arch armv7-a

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

@ LPAE stage-1 descriptors (low words; the high words are 0): valid | page,
@ AttrIndx 1 (Normal WB), AP 00 (PL1 read/write), SH inner, AF -> 0x707;
@ the same as a block -> 0x705; a table link -> 3.
.equ PTE_NORMAL_PAGE, 0x707
.equ PTE_NORMAL_BLOCK, 0x705
.equ PTE_TABLE, 3
@ The image's VA: L1 index 3, L2 index 384 (0xf0000000).
.equ IMG_L1_INDEX, 3
.equ IMG_L2_INDEX, 384

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
    .word _file_size                @ 0x2c: end (size of the loaded file)
    .word 0x04030201                @ 0x30: endianness marker (little)

@ ---------------------------------------------------------------------------
@ The primary CPU: SVC mode, MMU off, r0 = 0, r1 = ~0, r2 = DTB.
    .section .text.head, "ax"
primary_entry:
    cpsid aif
    mov r10, r2
    mov r9, #0
    mrs r0, cpsr
    and r0, r0, #0x1f
    cmp r0, #0x13                   @ SVC
    bne park                        @ a guest runs in SVC mode
    adr_l r11, _start
    bl build_boot_tables
    bl cpu_setup
    ldr r1, =primary_switched
    b enable_mmu

@ Zeroes BSS (boot tables and pool included) and builds the boot tables:
@ the image at its link address (L1[3] -> L2[384] -> L3, 4 KiB pages) and a
@ 1 GiB identity block over the page that turns the MMU on.
build_boot_tables:
    adr_l r0, __pgtables_start
    adr_l r1, _end
    mov r2, #0
    mov r3, #0
0:  strd r2, r3, [r0], #8
    cmp r0, r1
    blo 0b

    mov r3, #0                      @ high words
    adr_l r0, boot_root
    adr_l r2, boot_img_l2
    orr r2, r2, #PTE_TABLE
    add r1, r0, #(IMG_L1_INDEX * 8)
    strd r2, r3, [r1]
    adr_l r0, boot_img_l2
    adr_l r2, boot_img_l3
    orr r2, r2, #PTE_TABLE
    add r1, r0, #(IMG_L2_INDEX * 8)
    strd r2, r3, [r1]

    adr_l r0, boot_img_l3
    mov r1, r11                     @ PA
    adr_l r4, _end
    movw r5, #PTE_NORMAL_PAGE
1:  orr r2, r1, r5
    strd r2, r3, [r0], #8
    add r1, r1, #4096
    cmp r1, r4
    blo 1b

    @ The identity block of the MMU-enable code; its 1 GiB must not be the
    @ image's VA slot.
    adr_l r6, enable_mmu
    lsr r0, r6, #30
    cmp r0, #IMG_L1_INDEX
    beq park
    adr_l r1, boot_root
    add r1, r1, r0, lsl #3
    lsl r2, r0, #30
    movw r5, #PTE_NORMAL_BLOCK
    orr r2, r2, r5
    strd r2, r3, [r1]

    @ Tables written with the MMU off went to memory: drop any stale cached
    @ copy before the walker reads them through the caches.
    dsb
    adr_l r0, __pgtables_start
    adr_l r1, __pgtables_end
    mrc p15, 0, r2, c0, c0, 1       @ CTR
    ubfx r2, r2, #16, #4
    mov r3, #4
    lsl r3, r3, r2                  @ D-cache line size
2:  mcr p15, 0, r0, c7, c6, 1       @ DCIMVAC
    add r0, r0, r3
    cmp r0, r1
    blo 2b
    dsb
    bx lr

@ MAIR0/1, TTBCR (LPAE, 32-bit VAs through TTBR0, TTBR1 walks off), TTBR0 =
@ boot_root; TLB and I-cache invalidated.
cpu_setup:
    ldr r0, ={MAIR0}
    mcr p15, 0, r0, c10, c2, 0      @ MAIR0
    mov r0, #0
    mcr p15, 0, r0, c10, c2, 1      @ MAIR1
    ldr r0, ={TTBCR}
    mcr p15, 0, r0, c2, c0, 2       @ TTBCR
    adr_l r0, boot_root
    mov r1, #0
    mcrr p15, 0, r0, r1, c2         @ TTBR0 (64-bit)
    isb
    mcr p15, 0, r0, c8, c7, 0       @ TLBIALL
    mcr p15, 0, r0, c7, c5, 0       @ ICIALLU
    dsb
    isb
    bx lr

@ Turns the MMU and caches on (alignment checks off, VBAR vectors), then
@ branches to r1 (a link address).
enable_mmu:
    mrc p15, 0, r0, c1, c0, 0       @ SCTLR
    ldr r2, ={SCTLR_CLEAR}
    bic r0, r0, r2
    ldr r2, ={SCTLR_SET}
    orr r0, r0, r2
    dsb
    mcr p15, 0, r0, c1, c0, 0
    isb
    mcr p15, 0, r0, c7, c5, 0       @ ICIALLU
    dsb
    isb
    bx r1

@ Not in SVC mode, or loaded where the image's VA slot would clash: nothing
@ can be printed yet (the UART is found in the DTB, by Rust). Park.
park:
    wfe
    b park

@ A secondary CPU (PSCI CPU_ON): SVC mode, MMU off, r0 = its CPU index.
@ The primary's tables already map this code at its physical address (RAM
@ is identity mapped) and at its link address.
    .global secondary_entry
secondary_entry:
    cpsid aif
    mov r9, r0
    adr_l r11, _start
    bl cpu_setup
    ldr r1, =secondary_switched
    b enable_mmu

    .ltorg

@ ---------------------------------------------------------------------------
@ At the link address, MMU on.
    .text
primary_switched:
    bl set_stacks
    mov r0, r10                     @ DTB
    mov r1, r11                     @ load address
    bl guest_main
0:  wfe
    b 0b

secondary_switched:
    bl set_stacks
    mov r0, r9
    bl guest_secondary
0:  wfe
    b 0b

@ VBAR, and the stacks of CPU r9: SVC from the top of its stack area, the
@ abort and undefined modes from the bottom EXC_STACK bytes.
set_stacks:
    ldr r0, =guest_vectors
    mcr p15, 0, r0, c12, c0, 0      @ VBAR
    isb
    ldr r0, =guest_stacks
    ldr r1, ={STACK_SIZE}
    mla r0, r1, r9, r0              @ bottom of this CPU's area
    add r1, r0, #{EXC_STACK}
    cps #0x17                       @ abort mode
    mov sp, r1
    cps #0x1b                       @ undefined mode
    mov sp, r1
    cps #0x13                       @ back to SVC
    ldr r1, ={STACK_SIZE}
    add sp, r0, r1
    bx lr

    .ltorg

@ ---------------------------------------------------------------------------
@ Exception vectors. Each saves r0-r12 and the address of the instruction
@ that took the exception, and calls guest_exception(kind, frame); only a
@ data abort returns (an expected one): the faulting instruction is skipped.
.macro exc kind, adjust
    sub lr, lr, #\adjust            @ the instruction that took the exception
    push {{r0-r12, lr}}
    mov r0, #\kind
    mov r1, sp
    bl guest_exception
    pop {{r0-r12, lr}}
    add lr, lr, #4                  @ skip it
    movs pc, lr                     @ CPSR from SPSR
.endm

    .section .text.vectors, "ax"
    .balign 32
    .global guest_vectors
guest_vectors:
    b vec_reset
    b vec_undef
    b vec_svc
    b vec_pabt
    b vec_dabt
    b vec_unused
    b vec_irq
    b vec_fiq

vec_reset:  exc 0, 0
vec_undef:  exc 1, 4
vec_svc:    exc 2, 4
vec_pabt:   exc 3, 4
vec_dabt:   exc 4, 8
vec_unused: exc 5, 0
vec_irq:    exc 6, 4
vec_fiq:    exc 7, 4

@ ---------------------------------------------------------------------------
@ Boot tables, the table pool and the stacks (all BSS: zeroed by the head).
    .section .pgtables, "aw", %nobits
    .balign 4096
    .global boot_root
boot_root:      .space 4096
boot_img_l2:    .space 4096
boot_img_l3:    .space 4096
    .global table_pool
table_pool:     .space 4096 * {POOL_PAGES}

    .section .bss.guest_stacks, "aw", %nobits
    .balign 16
    .global guest_stacks
guest_stacks:   .space {STACK_SIZE} * {MAX_CPUS}
